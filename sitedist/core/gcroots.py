"""The store's GC roots, all in one place: what keeps an artifact alive.

``<store>/.sitedist/gcroots/`` holds one JSON file per root: ``{"prefixes": [...], "pid", "host",
"started", "what", "beat"}``. Roots with a ``pid`` are temporary (a sync in progress registers the
prefixes of its whole plan before it builds anything); they count while that process lives. A process
on this machine is probed (its pid and start time); one on another host cannot be, so while it lives
it touches its root file every ``beat`` seconds (a heartbeat, as locks do), and its root counts until
that heartbeat is older than ``ROOT_STALE``, however long the sync runs. Roots without a pid are
registered by users (``sitedist gc --add-root``) and count until removed.

``<store>/.sitedist/gcroots/trees/<kind>-<digest>.json`` = ``{"kind", "path"}``: the registry of
published views (module trees, profiles, develop environments) that refer to this store, one file per
view. A GC run with one config so keeps what another config's views (another cluster's module tree)
use. What a view references is the view's business: the collector asks it (``live_prefixes``).
"""

import hashlib
import json
import os
import pwd
import socket
import stat
import threading
import time

import psutil

from sitedist.core.locks import StoreLock
from sitedist.core.processes import pid_alive
from sitedist.errors import StoreError


def _root_dir(store):
    return store.gcroots_dir


HEARTBEAT = 60.0     # seconds between the touches of a running sync's root file
ROOT_STALE = 900.0   # a root of another host whose heartbeat is older than this died with its host


def _alive(info, heartbeat, now=None):
    """Whether the root ``info``, whose file was last touched at ``heartbeat``, still counts."""
    pid = info.get("pid")
    if pid is None:
        return True
    if info.get("host") != socket.gethostname():
        # Another host's sync: alive while it beats (on NFS the file's time is the server's clock).
        return (time.time() if now is None else now) - heartbeat <= ROOT_STALE
    return pid_alive(pid, info.get("created"))


def gc_lock(store, on_wait=None, what="gc"):
    """The store's GC lock: held by a GC from reading the roots to the end of its sweep, and by a sync
    while it registers its root."""
    os.makedirs(store.lock_dir, exist_ok=True)
    return StoreLock(os.path.join(store.lock_dir, "gc.lock"), what=what, on_wait=on_wait)


class InUse:
    """Context manager: while it is open, ``prefixes`` are GC roots."""

    def __init__(self, store, prefixes, what="sync", heartbeat=HEARTBEAT):
        self.path = os.path.join(_root_dir(store), f"inuse-{socket.gethostname()}-{os.getpid()}-{id(self)}.json")
        self.store = store
        self.heartbeat = heartbeat
        self.info = {"prefixes": sorted(prefixes), "pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.time(), "created": psutil.Process().create_time(), "what": what,
                     "beat": heartbeat}
        self._stop = threading.Event()

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # Under the GC lock: a GC either reads this root, or has finished its sweep before the sync
        # looks at the store again.
        with gc_lock(self.store, what=f"registering a GC root ({self.info['what']})"):
            self.store.write_json_atomic(self.path, self.info)
        threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True).start()
        return self

    def _beat(self):
        """Touch the root file every ``heartbeat`` seconds until the root is closed."""
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return
            except OSError:   # a network filesystem's hiccup: try again at the next beat
                pass

    def __exit__(self, *exc):
        self._stop.set()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def register(store, name, prefixes):
    """A permanent, named root (a user's pinned environment)."""
    os.makedirs(_root_dir(store), exist_ok=True)
    store.write_json_atomic(os.path.join(_root_dir(store), f"user-{name}.json"),
                            {"prefixes": sorted(prefixes), "what": f"root {name}", "started": time.time()})


def live_roots(store):
    """{root file: prefixes} for every root that still counts."""
    out = {}
    directory = _root_dir(store)
    if not os.path.isdir(directory):
        return out
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                info = json.load(f)
                heartbeat = os.fstat(f.fileno()).st_mtime
        except (OSError, ValueError):
            continue
        if _alive(info, heartbeat):
            out[name] = set(info.get("prefixes", []))
    return out


# --- the registry of published views ------------------------------------------------------------

def register_tree(store, kind, path):
    """Remember that the view at ``path`` (a module root, profile root or develop environment) refers
    to artifacts of ``store``, so that every GC of the store counts it."""
    path = os.path.abspath(path)
    target = os.path.join(store.trees_dir, f"{kind}-{hashlib.sha256(path.encode()).hexdigest()[:20]}.json")
    if os.path.exists(target):
        return
    store.init()   # the registry directory, and in a group store files every admin can read
    try:
        store.write_json_atomic(target, {"kind": kind, "path": path, "registered": time.time()})
    except OSError as exc:
        raise StoreError(f"cannot register the {kind} tree {path} as a GC root of {store.root}: {exc.strerror} "
                         f"({owner_hint(store.trees_dir)})") from None


def registered_trees(store):
    """[(kind, path, registration file)] of every registered view."""
    out = []
    try:
        names = sorted(os.listdir(store.trees_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        reg = os.path.join(store.trees_dir, name)
        try:
            with open(reg, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("kind"), str) and isinstance(info.get("path"), str):
            out.append((info["kind"], info["path"], reg))
    return out


def forget_tree(store, reg):
    """Drop the registration file ``reg`` (of a view that no longer exists)."""
    try:
        os.unlink(reg)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot remove the stale tree registration {reg}: {exc.strerror} "
                         f"({owner_hint(store.trees_dir)})") from None


def owner_hint(directory):
    """What to do when ``directory`` of the store is not writable: who owns it, which mode it needs."""
    try:
        st = os.stat(directory)
        owner = pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        return f"{directory} must be writable by every admin of the store"
    return (f"{directory} belongs to {owner} with mode {stat.S_IMODE(st.st_mode):o}; in a store shared by a "
            f"group it must be group-writable: as {owner} or root, run chmod g+w {directory}")
