"""Operations on a store and its published views: sync (build and publish), gc, verify and repair.

This layer sits above the views (sitedist.modules, sitedist.profiles, sitedist.develop) and below the
CLI; see ARCHITECTURE.md."""
