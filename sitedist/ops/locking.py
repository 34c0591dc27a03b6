"""Locks, history and diffs as operations on a loaded sync context (admin_docs/reproducible-stacks.md).

The lock document itself, reading and comparing locks live in sitedist.spec.lock; the history records
in sitedist.core.history. Here they meet the sync: ``sync --locked`` refuses a plan that differs from
its lock before anything is built, a successful sync records its lock in the history and rewrites an
existing lock file, and ``--from-history`` publishes a past lock again.
"""

import hashlib
import os

from sitedist.core import history
from sitedist.errors import ConfigError, DriftError
from sitedist.ops import noop
from sitedist.ops import sync as flow
from sitedist.spec import lock as locks


def lock_of(ctx, lock_path=None):
    """The lock document of a loaded context; paths in it relative to ``lock_path``'s directory."""
    base = os.path.dirname(os.path.abspath(lock_path or locks.default_path(ctx.config.path)))
    flow.with_documents(ctx)
    return locks.build_lock(ctx.config, ctx.host, ctx.plan, base)


class CurrentLock:
    """The lock of a loaded context, built only when needed: its digest and the sha256 of its text are
    kept beside a cached plan (spec.plan_cache facts), so a no-op sync, ``sync --locked`` and ``lock``
    compare a lock file and the history by digest without building the document."""

    def __init__(self, ctx, path):
        self.ctx, self.path = ctx, os.path.abspath(path)
        self._document = None
        self._fact = noop.lock_fact(self.path)
        self._summary = None
        if ctx.plan_cache is not None:
            self._summary = ctx.plan_cache.facts().get(self._fact)

    @property
    def document(self):
        if self._document is None:
            self._document = lock_of(self.ctx, self.path)
        return self._document

    def _facts(self):
        if self._summary is None:
            text = locks.dumps(self.document)
            self._summary = {"digest": locks.digest(self.document), "artifacts": len(self.document["artifacts"]),
                             "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
            if self.ctx.plan_cache is not None:
                self.ctx.plan_cache.remember(self._fact, self._summary)
        return self._summary

    @property
    def digest(self):
        return self._facts()["digest"]

    @property
    def text_sha256(self):
        return self._facts()["text_sha256"]

    @property
    def artifacts(self):
        return self._facts()["artifacts"]

    def written_at(self, path):
        """Whether the file at ``path`` holds exactly this lock's text."""
        try:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest() == self._facts()["text_sha256"]
        except OSError:
            return False

    def write(self, path):
        """Write the lock to ``path``; False (nothing written) when it already says the same."""
        return False if self.written_at(path) else locks.write(path, self.document)


def lock_path(config_path, given=None):
    return os.path.abspath(given) if given else locks.default_path(config_path)


def check_locked(ctx, path):
    """DriftError, before anything is built or published, when the plan differs from the lock at
    ``path``: one line per build, naming the package and the inputs that changed."""
    current = CurrentLock(ctx, path)
    if current.written_at(path):
        return current   # the same text: the ids were checked when it was written from a plan
    locked = locks.read(path)
    changes = locks.compare(locked, current.document)
    if changes:
        lines = [c.summary() for c in changes]
        raise DriftError(f"{ctx.config.path}: the plan differs from the lock {path} in {len(changes)} "
                         f"artifact(s); nothing was built or changed:\n  " + "\n  ".join(lines),
                         hint="if the change is intended, run 'sitedist lock' again (or sync without --locked) "
                              "and commit the new lock; 'sitedist diff' shows every difference")
    return current


def drift_from_existing(ctx, path, current=None):
    """Changes against an existing lock file (none when there is no lock or it cannot be read), for the
    warning of a sync without --locked."""
    if not os.path.exists(path):
        return []
    current = current or CurrentLock(ctx, path)
    if current.written_at(path):
        return []
    try:
        return locks.compare(locks.read(path), current.document)
    except ConfigError:
        return []


def after_success(ctx, path, current=None, rewrite=True):
    """After a successful sync: record its lock in the store's history and rewrite an existing lock
    file that says something else. Returns (history meta, whether the lock file was written)."""
    current = current or CurrentLock(ctx, path)
    meta = history.record(ctx.store, ctx.config.path, lambda: current.document, current.digest)
    written = bool(rewrite and os.path.exists(path) and current.write(path))
    return meta, written


# --- the sides of a diff ---------------------------------------------------------------------------

def _is_lock_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(64).lstrip().startswith("{")
    except (OSError, UnicodeDecodeError):
        return False


def resolve_side(ref):
    """A lock document for one side of ``sitedist diff``: a lock file, a config (resolved now), or
    ``CONFIG@N`` (the lock recorded by sync N of that config). Returns (lock, description)."""
    config, at, n = ref.rpartition("@")
    if at and n.isdigit() and os.path.isfile(config):
        store = _store_of(config)
        return history.read_lock(store, config, int(n)), f"{config} sync {n}"
    if not os.path.isfile(ref):
        raise ConfigError(f"no such file: {ref}", hint="give a site config, a lock file or CONFIG@N (sync N of "
                                                       "'sitedist history CONFIG')")
    if _is_lock_file(ref):
        return locks.read(ref), ref
    ctx = flow.load(ref)
    return lock_of(ctx), ref


def _store_of(config_path):
    from sitedist.core.store import Store
    from sitedist.spec.config import load_config

    config = load_config(config_path)
    return Store(config.store_root)


def last_published(ctx):
    """(history meta, lock) of the newest recorded sync of this config, or (None, None)."""
    metas = history.records(ctx.store, ctx.config.path)
    if not metas:
        return None, None
    return metas[-1], history.read_lock(ctx.store, ctx.config.path, metas[-1]["n"])


# --- going back to a recorded state ----------------------------------------------------------------

def restore(config_path, ref, build_missing=True, jobs=None):
    """Publish the module tree and profiles of a recorded sync (``ref`` a number of 'sitedist history')
    or of a lock file, from artifacts already in the store, building nothing. When some are gone and the
    sync was recorded from a clean git commit, that commit's config and recipes build them (see
    :func:`rebuild_from_commit`). Returns lines for people."""
    import dataclasses

    from sitedist.core.gcroots import InUse
    from sitedist.core.store import Store
    from sitedist.spec.config import load_config

    config = load_config(config_path)
    store = Store(config.store_root, config.upstreams, group=config.store_group, build_dir=config.build_dir)
    if ref.isdigit():
        lock, what = history.read_lock(store, config_path, int(ref)), f"sync {ref} of {config_path}"
    else:
        lock, what = locks.read(ref), ref
    plan = locks.locked_plan(lock)
    prefixes, missing = {}, []
    for node in plan.nodes:
        prefixes[node.key] = store.find(node.name, node.version, node.aid)
        if prefixes[node.key] is None:
            missing.append(node.label + f" [{node.aid}]")
    if missing:
        git = next((m.get("git") for m in history.records(store, config_path) if ref.isdigit() and
                    str(m["n"]) == ref), None)
        if build_missing and git and not git.get("dirty"):
            return rebuild_from_commit(config, git, lock, what, missing, jobs=jobs)
        from sitedist.errors import StoreError

        hint = ("it was recorded from a work tree with uncommitted changes, so its commit does not reproduce it; "
                if git else "") + "sync the config (and recipes) that wrote it; that builds what is missing"
        raise StoreError(f"{len(missing)} artifact(s) of {what} are no longer in the store "
                         f"{store.root}: {', '.join(missing)}; nothing was changed\n  hint: {hint}")
    profiles = {name: dataclasses.replace(spec, packages=list(lock["profiles"][name]))
                for name, spec in config.profiles.items() if name in lock.get("profiles", {})}
    config = dataclasses.replace(config, profiles=profiles)
    ctx = flow.Context(config=config, store=store, host=None, plan=plan,
                       states={n.key: "complete" for n in plan.nodes}, prefixes=prefixes)
    flow.check_publish_targets(config)
    lines = []
    with InUse(store, prefixes.values(), what=f"restoring {what}"):
        published = flow.publish(ctx)
    for result in published.get("modules", []):
        lines.append(f"modules: generation {result.generation} in {result.root} ({result.modules} modules)")
    lines += [f"profile: {result}" for result in published.get("profiles", [])]
    lines.append(f"restored {what}: {len(plan.nodes)} artifacts, nothing built")
    return lines


def rebuild_from_commit(current, git, lock, what, missing, jobs=None):
    """Go back to a recorded sync whose artifacts are partly gone: export its git commit (config and
    recipes as they were) to a temporary directory, load that config with today's store, module and
    profile roots, check that it resolves to exactly the recorded ids, then build what is missing and
    publish, as a sync of that commit would. Returns lines for people."""
    import dataclasses
    import subprocess
    import tempfile

    from sitedist.core.sources import unpack
    from sitedist.errors import StoreError

    rel = os.path.relpath(os.path.abspath(current.path), git["root"])
    if rel.startswith(".."):
        raise StoreError(f"{what}: the config is no longer inside the git work tree {git['root']}; "
                         f"{len(missing)} artifact(s) are missing: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="sitedist-history-") as tmp:
        archive = subprocess.run(["git", "-C", git["root"], "archive", "--format=tar", git["commit"]],
                                 capture_output=True)
        if archive.returncode != 0:
            raise StoreError(f"{what}: cannot export commit {git['commit'][:12]} of {git['root']} to build the "
                             f"{len(missing)} missing artifact(s): {archive.stderr.decode(errors='replace').strip()}")
        tar = os.path.join(tmp, "commit.tar")
        with open(tar, "wb") as f:
            f.write(archive.stdout)
        tree = os.path.join(tmp, "tree")
        unpack(tar, tree)

        def today(old):
            profiles = {name: dataclasses.replace(spec, root=current.profiles[name].root)
                        for name, spec in old.profiles.items() if name in current.profiles}
            return dataclasses.replace(old, path=current.path, store_root=current.store_root,
                                       store_group=current.store_group, build_dir=current.build_dir,
                                       upstreams=current.upstreams, modules=current.modules, profiles=profiles)

        ctx = flow.load(os.path.join(tree, rel), adjust=today)
        changes = locks.compare(lock, lock_of(ctx))
        if changes:
            raise DriftError(f"{what}: commit {git['commit'][:12]} no longer resolves to the recorded ids on this "
                             f"host, so the missing artifacts cannot be rebuilt as they were; nothing was built or "
                             f"changed:\n  " + "\n  ".join(c.summary() for c in changes))
        result = flow.finish_sync(ctx, jobs=jobs)
        if not result.ok:
            first = next(iter(result.failed.values()), None)
            raise StoreError(f"{what}: rebuilding from commit {git['commit'][:12]} failed: {first}")
    return [f"built {len(result.built)} missing artifact(s) from commit {git['commit'][:12]}: "
            + ", ".join(result.built), f"restored {what}: {len(lock['artifacts'])} artifacts"]
