"""Garbage collection of one store: mark from the roots, sweep the rest (admin_docs/gc.md).

Roots:
- module trees: every kept generation (``sitedist.modules.live_prefixes``) of the config's module
  roots and of every tree ever published into this store (the tree registry below);
- profiles: every kept generation of the config's profiles and of registered profiles;
- develop environments registered by ``sitedist develop``;
- ``sitedist.core.gcroots.live_roots``: running syncs (their whole plan) and roots users registered;
- incomplete prefixes whose build lock is held (a build in progress).
The closure follows each artifact's dependencies (``.sitedist/spec.json`` "deps": name -> prefix).

Tree registry: ``<store>/.sitedist/gcroots/trees/<kind>-<digest>.json`` = ``{"kind", "path"}``, one file
per module tree, profile or develop environment that refers to this store. A GC run with one config so
keeps what another config's trees (another cluster's module tree) use. A registration whose path no
longer exists is dropped.

Only this store is swept, never an upstream. Everything runs under the store's ``gc.lock``; removal
renames an artifact into ``<store>/.sitedist/trash/gc-<pid>-<token>/`` (one atomic step: a reader sees
the artifact whole or not at all) and deletes it there.
"""

import hashlib
import json
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass, field

from sitedist.core.history import kept_prefixes
from sitedist.core.gcroots import gc_lock, live_roots, register
from sitedist.core.locks import StoreLock, is_stale, read_holder
from sitedist.core.store import Store, remove_tree
from sitedist.develop import RECORD as DEVELOP_RECORD
from sitedist.errors import LockError, StoreError
from sitedist.spec.schema import NAME

KINDS = ("modules", "profile", "develop")


@dataclass
class GcResult:
    store: str
    dry_run: bool
    roots: list = field(default_factory=list)      # (what, number of prefixes)
    pruned: list = field(default_factory=list)     # (profile root, [generation numbers])
    removed: list = field(default_factory=list)    # (prefix, bytes, complete)
    failed: list = field(default_factory=list)     # (prefix, reason)
    building: list = field(default_factory=list)   # incomplete prefixes kept: their build is running
    stale: list = field(default_factory=list)      # registered trees that no longer exist
    kept: int = 0                                  # artifacts of this store that stay

    @property
    def freed(self):
        return sum(size for _, size, _ in self.removed)


# --- the tree registry ---------------------------------------------------------------------------

def register_tree(store, kind, path):
    """Remember that the tree at ``path`` (a module root, profile root or develop environment) refers
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
                         f"({_owner_hint(store.trees_dir)})") from None


def _owner_hint(directory):
    """What to do when ``directory`` of the store is not writable: who owns it, which mode it needs."""
    try:
        st = os.stat(directory)
        import pwd

        owner = pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        return f"{directory} must be writable by every admin of the store"
    return (f"{directory} belongs to {owner} with mode {stat.S_IMODE(st.st_mode):o}; in a store shared by a "
            f"group it must be group-writable: as {owner} or root, run chmod g+w {directory}")


def registered_trees(store):
    """[(kind, path, registration file)]."""
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
        if info.get("kind") in KINDS:
            out.append((info["kind"], info["path"], reg))
    return out


def _tree_prefixes(kind, path, skip=()):
    if kind == "modules":
        from sitedist.modules import live_prefixes

        return live_prefixes(path)
    if kind == "profile":
        from sitedist import profiles

        return profiles.live_prefixes(path, skip)
    try:
        with open(os.path.join(path, DEVELOP_RECORD), encoding="utf-8") as f:
            return set(json.load(f)["prefixes"])
    except (OSError, ValueError, KeyError):
        return set()


def _tree_exists(kind, path):
    if kind == "profile":
        from sitedist.profiles import generations_dir

        return os.path.lexists(path) or os.path.isdir(generations_dir(path))
    if kind == "develop":
        return os.path.isfile(os.path.join(path, DEVELOP_RECORD))
    return os.path.isdir(path)


# --- roots users register ------------------------------------------------------------------------

def add_root(store, name, prefixes):
    """Register the complete artifacts ``prefixes`` of ``store`` (or its upstreams) as root ``name``."""
    if not re.fullmatch(NAME, name):
        raise StoreError(f"root name '{name}': use letters, digits and '_ + . -' (at most 64 characters)")
    prefixes = [os.path.abspath(p) for p in prefixes]
    if not prefixes:
        raise StoreError("--add-root needs the artifact prefixes to keep (see 'sitedist show CONFIG NAME')")
    bad = [p for p in prefixes if not Store.is_complete(p)]
    if bad:
        raise StoreError(f"not complete artifacts: {', '.join(bad)}")
    store.init()
    with gc_lock(store):   # a GC running now has read the roots: let it finish first
        register(store, name, prefixes)


def remove_root(store, name):
    path = os.path.join(store.gcroots_dir, f"user-{name}.json")
    if not re.fullmatch(NAME, name) or not os.path.exists(path):
        raise StoreError(f"no root '{name}' is registered in {store.root}")
    os.unlink(path)


# --- marking ---------------------------------------------------------------------------------------

def config_trees(config):
    """[(kind, path)] of the module and profile roots a config publishes to."""
    from sitedist.profiles import profile_roots

    targets = config.targets
    if len(targets) > 1:
        from sitedist.sync import resolve_targets

        targets = list(resolve_targets(config).values())
    trees = []
    if config.modules is not None:
        root = config.modules["root"]
        trees += [("modules", os.path.join(root, t)) for t in targets] if len(targets) > 1 else [("modules", root)]
    for spec in config.profiles.values():
        trees += [("profile", root) for root, _ in profile_roots(spec, targets)]
    return trees


def closure(store, prefixes):
    """``prefixes`` and, for those in ``store``, their dependencies, transitively; as real paths, so
    that two spellings of one store (through a symlink) name the same artifact."""
    live, stack = set(), [os.path.realpath(p) for p in prefixes]
    inside = os.path.realpath(store.root) + os.sep
    while stack:
        prefix = stack.pop()
        if prefix in live:
            continue
        live.add(prefix)
        if not prefix.startswith(inside):
            continue   # an upstream's artifact: its dependencies are the upstream's
        try:
            deps = Store.read_spec(prefix).get("deps", {})
        except (OSError, ValueError):
            continue
        stack += [os.path.realpath(p) for p in deps.values()]
    return live


def _build_running(store, name, version, aid):
    info = read_holder(store.lock_path(name, version, aid))
    return info is not None and not is_stale(info, stale_after=600.0)


def disk_usage(path, seen=None):
    """Bytes ``path`` occupies on disk, like ``du -s -B1`` (hard links counted once, via ``seen``)."""
    seen = set() if seen is None else seen
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [""] + dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name) if name else dirpath)
            except FileNotFoundError:
                continue
            if name in dirnames and stat.S_ISDIR(st.st_mode):
                continue   # counted when walked
            key = (st.st_dev, st.st_ino)
            if key not in seen:
                seen.add(key)
                total += st.st_blocks * 512
    return total


# --- the collection --------------------------------------------------------------------------------

def collect(config, dry_run=False, keep=None, older_than_days=None, on_wait=None, keep_syncs=None):
    """Prune generations by the retention rule, mark, and sweep the config's store (never an upstream)."""
    store = Store(config.store_root, config.upstreams, group=config.store_group, build_dir=config.build_dir)
    result = GcResult(store=store.root, dry_run=dry_run)
    if not os.path.isdir(store.root):
        return result
    store.check_is_store()
    if dry_run:
        _collect(store, config, result, keep, older_than_days, keep_syncs)
        return result
    store.init()
    with gc_lock(store, on_wait):
        _collect(store, config, result, keep, older_than_days, keep_syncs)
    return result


def _collect(store, config, result, keep, older_than_days, keep_syncs):
    from sitedist import profiles

    dry = result.dry_run
    trash_root = store.trash_dir   # shared with 'verify --repair', whose entries stay
    trash = os.path.join(trash_root, f"gc-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if not dry:
        for kind, path in config_trees(config):
            if _tree_exists(kind, path):
                register_tree(store, kind, path)
        for name in os.listdir(trash_root) if os.path.isdir(trash_root) else ():
            if name.startswith("gc-"):   # left by a killed GC (GCs run one at a time, under the lock)
                _empty_trash(os.path.join(trash_root, name), result)
    trees = {(kind, os.path.abspath(path)): None for kind, path in config_trees(config)}
    for kind, path, reg in registered_trees(store):
        trees.setdefault((kind, path), reg)

    roots = set()
    older_than = older_than_days * 86400.0 if older_than_days is not None else None
    for (kind, path), reg in trees.items():
        if not _tree_exists(kind, path):
            if reg is not None:
                result.stale.append(f"{kind} {path}")
                if not dry:
                    _forget(store, reg)
            continue
        skip = []
        if kind == "profile":
            skip = profiles.select_pruned(path, keep, older_than) if dry else profiles.prune(path, keep, older_than)
            if skip:
                result.pruned.append((path, skip))
        prefixes = _tree_prefixes(kind, path, skip)
        result.roots.append((f"{kind} {path}", len(prefixes)))
        roots |= prefixes
    for name, prefixes in live_roots(store).items():
        result.roots.append((f"root {name}", len(prefixes)))
        roots |= prefixes
    keep_syncs = config.history_keep if keep_syncs is None else keep_syncs
    recorded = kept_prefixes(store, keep_syncs)  # so that 'sync --from-history' needs no build
    if recorded:
        result.roots.append((f"the last {keep_syncs} recorded sync(s) of each config", len(recorded)))
        roots |= recorded
    live = closure(store, roots)

    seen = set()
    for name, version, aid, prefix, complete in list(store.artifacts()):
        if os.path.realpath(prefix) in live:
            result.kept += 1
            continue
        if not complete and _build_running(store, name, version, aid):
            result.building.append(prefix)
            continue
        size = disk_usage(prefix, seen)
        if not dry:
            try:
                if complete:
                    _move_to_trash(prefix, trash)
                elif not _remove_interrupted(store, name, version, aid, prefix, trash):
                    result.building.append(prefix)
                    continue
            except OSError as exc:
                result.failed.append((prefix, _why(prefix, exc)))
                continue
        result.removed.append((prefix, size, complete))
    if not dry:
        _empty_trash(trash, result)


def _forget(store, reg):
    try:
        os.unlink(reg)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot remove the stale tree registration {reg}: {exc.strerror} "
                         f"({_owner_hint(store.trees_dir)})") from None


def _empty_trash(trash, result):
    try:
        remove_tree(trash)
    except OSError as exc:   # the next GC tries again
        result.failed.append((trash, f"cannot empty the trash: {exc}"))


def _remove_interrupted(store, name, version, aid, prefix, trash):
    """Move an interrupted build's prefix to the trash under the artifact's lock, which a build takes
    before it touches the prefix. False if a build holds the lock (or completed the prefix meanwhile)."""
    lock = StoreLock(store.lock_path(name, version, aid), what="gc: removing an interrupted build's prefix",
                     timeout=0)
    try:
        lock.acquire()
    except LockError:
        return False
    try:
        if Store.is_complete(prefix):
            return False
        _move_to_trash(prefix, trash)
        return True
    finally:
        lock.release()


def _move_to_trash(prefix, trash):
    """Rename the artifact into the trash: one atomic step, so readers see it whole or not at all."""
    os.makedirs(trash, exist_ok=True)
    aside = os.path.join(trash, f"{os.path.basename(os.path.dirname(prefix))}-{os.path.basename(prefix)}")
    # A directory moves to another parent only if it is writable itself (sealed artifacts are not).
    os.chmod(prefix, stat.S_IMODE(os.lstat(prefix).st_mode) | stat.S_IWUSR)
    os.rename(prefix, aside)


def _why(prefix, exc):
    if isinstance(exc, PermissionError):
        try:
            import pwd

            owner = pwd.getpwuid(os.lstat(prefix).st_uid).pw_name
        except (KeyError, OSError):
            owner = "another user"
        return f"permission denied ({exc.strerror}); it belongs to {owner}: run the GC as {owner} or root"
    return str(exc)


def format_bytes(n):
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
