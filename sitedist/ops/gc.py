"""Garbage collection of one store: mark from the roots, sweep the rest (admin_docs/gc.md).

Roots:
- published views: the config's module trees and profiles, and every view registered in the store
  (``sitedist.core.gcroots.registered_trees``: module trees, profiles and develop environments of any
  config). Each view answers what it references through one interface (``VIEWS`` below):
  ``exists(path)`` and ``live_prefixes(path, skip=())``. A registration whose view no longer exists
  is dropped;
- ``sitedist.core.gcroots.live_roots``: running syncs (their whole plan) and roots users registered;
- incomplete prefixes whose build lock is held (a build in progress).
The closure follows each artifact's dependencies (``.sitedist/spec.json`` "deps": name -> prefix).

Only this store is swept, never an upstream. Everything runs under the store's ``gc.lock``; removal
renames an artifact into ``<store>/.sitedist/trash/gc-<pid>-<token>/`` (one atomic step: a reader sees
the artifact whole or not at all) and deletes it there.
"""

import os
import pwd
import re
import stat
import uuid
from dataclasses import dataclass, field

from sitedist import develop, modules, profiles
from sitedist.core.gcroots import (forget_tree, gc_lock, live_roots, register, register_tree,
                                   registered_trees)
from sitedist.core.history import kept_prefixes
from sitedist.core.locks import StoreLock, is_stale, read_holder
from sitedist.core.store import Store, remove_tree
from sitedist.errors import LockError, StoreError
from sitedist.host.target import resolve_targets
from sitedist.spec.schema import NAME

# kind in the tree registry -> the view: each has exists(path) and live_prefixes(path, skip=())
VIEWS = {"modules": modules, "profile": profiles, "develop": develop}


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
    targets = config.targets
    if len(targets) > 1:
        targets = list(resolve_targets(config).values())
    trees = []
    if config.modules is not None:
        root = config.modules["root"]
        trees += [("modules", os.path.join(root, t)) for t in targets] if len(targets) > 1 else [("modules", root)]
    for spec in config.profiles.values():
        trees += [("profile", root) for root, _ in profiles.profile_roots(spec, targets)]
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
    dry = result.dry_run
    trash_root = store.trash_dir   # shared with 'verify --repair', whose entries stay
    trash = os.path.join(trash_root, f"gc-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if not dry:
        for kind, path in config_trees(config):
            if VIEWS[kind].exists(path):
                register_tree(store, kind, path)
        for name in os.listdir(trash_root) if os.path.isdir(trash_root) else ():
            if name.startswith("gc-"):   # left by a killed GC (GCs run one at a time, under the lock)
                _empty_trash(os.path.join(trash_root, name), result)
    trees = {(kind, os.path.abspath(path)): None for kind, path in config_trees(config)}
    for kind, path, reg in registered_trees(store):
        if kind in VIEWS:
            trees.setdefault((kind, path), reg)

    roots = set()
    older_than = older_than_days * 86400.0 if older_than_days is not None else None
    for (kind, path), reg in trees.items():
        if not VIEWS[kind].exists(path):
            if reg is not None:
                result.stale.append(f"{kind} {path}")
                if not dry:
                    forget_tree(store, reg)
            continue
        skip = []
        if kind == "profile":
            skip = profiles.select_pruned(path, keep, older_than) if dry else profiles.prune(path, keep, older_than)
            if skip:
                result.pruned.append((path, skip))
        prefixes = VIEWS[kind].live_prefixes(path, skip)
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
