"""Stages 1-2 of a sync (config, store, host, the plan's key) and the no-op fast path.

A sync that finds its plan cached, every artifact where it was, the module trees and profiles at the
generations it published, the lock file and the history as it left them, has nothing to do. After each
successful sync, :func:`remember` keeps, beside the plan cache's entry (spec.plan_cache facts), what the
sync left: per artifact the stamp (inode, mtime) of its completion marker (and of the markers of the
stores looked in before it), per module tree and profile its current generation, the site templates'
digest, the lock file's checksum, the newest history record's digest and git state. :func:`unchanged`
checks exactly that, and returns the lines a full sync would print, without loading the plan. Any
difference (or a plan cache miss) takes the full path, which publishes or records what changed.

This module imports no builder, scheduler or module renderer, so that the fast path starts fast.
"""

import dataclasses
import hashlib
import os

from sitedist.core import history
from sitedist.core.gcroots import register_tree
from sitedist.core.generations import generation_of
from sitedist.core.store import MARKER, META, Store
from sitedist.errors import StoreError
from sitedist.host.target import resolve_targets
from sitedist.profiles import ProfileResult
from sitedist.host.toolchains import (Host, probe_cached, probe_key, resolve_host, resolve_pythons,
                                     resolve_toolchains, resolve_tools, search_dirs)
from sitedist.spec.config import load_config
from sitedist.spec.doc_cache import DocCache
from sitedist.spec.plan_cache import PlanCache, plan_key

FACT = "published"
LMOD_TREES = {"lua": "lmod", "tcl": "tcl"}   # modules.render.FORMATS' tree directories
CATALOG = "catalog"                           # modules.catalog.CATALOG (not imported: it imports Jinja2)


def cache_dir():
    """Where probe results are cached: the user's cache directory (never the store, which a failed
    or dry-run sync must not touch). Used only if no other user could write there (core.trust)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sitedist")


def probe_report_for(config, refresh=False):
    return probe_cached(cache_dir(), extra_dirs=config.host.get("paths", []),
                        timeout=config.host.get("timeout", 10.0), refresh=refresh)


def probe_host_for(config, refresh=False, report=None):
    """The host packages and toolchains of ``config``: from ``report`` (a ProbeReport: a Slurm job uses
    the submitting host's, so that it resolves the same plan) or a (cached) probe of this host."""
    report = report or probe_report_for(config, refresh)
    packages = resolve_host(config, report)
    tools = resolve_tools(config, report, packages)
    toolchains = resolve_toolchains(config, packages)
    return Host(packages=packages, toolchains=toolchains, problems=list(report.problems), tools=tools,
                search_dirs=tuple(search_dirs(config.host.get("paths", []))),
                timeout=config.host.get("timeout", 10.0), pythons=resolve_pythons(config, report))


@dataclasses.dataclass
class Loaded:
    """Stages 1-2 of a sync and the key of its plan (spec.plan_cache)."""
    config: object
    store: Store
    host: Host
    targets: dict
    cache: PlanCache
    key: str


def load_key(config_path, refresh_probe=False, probe_report=None, adjust=None):
    """Load and validate the config, probe the host (or take ``probe_report``), compute the plan's key.
    ``adjust(config)`` may return a changed config first (its plan is then not cached)."""
    config_docs = DocCache.for_config(config_path, cache_dir(), part="-config")
    config = load_config(config_path, config_docs)
    config_docs.save()
    if adjust is not None:
        config = adjust(config)
    store = Store(config.store_root, config.upstreams, group=config.store_group, build_dir=config.build_dir)
    for upstream in store.upstreams:
        if not os.path.isdir(upstream.root):
            raise StoreError(f"upstream store not found: {upstream.root} (named in {config.where('upstreams')})")
    host = probe_host_for(config, refresh_probe, probe_report)
    targets = resolve_targets(config)
    cache = PlanCache.for_config(config.path, cache_dir()) if adjust is None else PlanCache()
    key = plan_key(config, host, targets, probe_key(config.host.get("paths", [])))
    return Loaded(config=config, store=store, host=host, targets=targets, cache=cache, key=key)


def check_publish_targets(config):
    """Before building: the module tree and profiles must be writable by this user (a user stack that
    extends the site config inherits the site's modules.root unless it sets its own)."""
    places = []
    if config.modules:
        places.append((config.modules["root"], ("modules", "root"),
                       "set your own, e.g. modules: {root: ~/.sitedist/modules}"))
    for name, spec in config.profiles.items():
        places.append((spec.root, ("profiles", name), f"set profiles: {{{name}: {{root: ~/profiles/{name}}}}}"))
    for path, where, hint in places:
        probe = path
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        target = probe if probe == path or os.path.isdir(probe) else os.path.dirname(probe)
        if not os.access(target, os.W_OK | os.X_OK):
            raise StoreError(f"{config.where(*where)}: permission denied: cannot publish to {path} "
                             f"(nothing was built or changed)\n  hint: {hint}")


# --- the fast path ---------------------------------------------------------------------------------

def _marker(prefix):
    try:
        st = os.stat(os.path.join(prefix, META, MARKER))
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns]


def _looked_in(store, node):
    """[prefix, marker stamp] of each store a sync looks in for ``node``, up to the one that has it."""
    out = []
    for s in [store] + store.upstreams:
        prefix = s.prefix(node.name, node.version, node.aid)
        stamp = _marker(prefix)
        out.append([prefix, stamp])
        if stamp is not None:
            break
    return out


def templates_digest(directory):
    """Digest of a site's modulefile templates directory (the shipped ones are part of sitedist's code
    digest, spec.plan_cache.code_digest)."""
    if not directory:
        return None
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    h.update(f"{os.path.relpath(path, directory)}\0".encode() + f.read() + b"\0")
            except OSError:
                h.update(f"{path}\0?".encode())
    return h.hexdigest()


def _lmod_cache_fresh(root, cache_dir_):
    try:
        stamp = os.stat(os.path.join(cache_dir_, "timestamp")).st_mtime
        os.stat(os.path.join(cache_dir_, "lmodrc.lua"))   # as modules.lmod_cache.cache_stale
        return stamp > os.lstat(os.path.join(root, "current")).st_mtime
    except OSError:
        return False


def remember(ctx, published, lock_file, lock, history_meta):
    """After a successful sync: keep what it left (see the module docstring) beside its plan."""
    if ctx.plan_cache is None or not ctx.plan_cache.entry:
        return
    modules = []
    for pub in (published or {}).get("modules", []):
        cfg = dict(ctx.config.modules or {})
        modules.append({"root": pub.root, "generation": pub.generation, "modules": pub.modules,
                        "notes": list(pub.notes), "modulepath": list(pub.modulepath.values())[:1],
                        "links": [LMOD_TREES[f] for f in cfg.get("formats", [])],
                        "lmod_cache": None})
    # the Lmod caches, per tree, as ops.publish.module_configs places them
    roots = {m["root"]: m for m in modules}
    lmod_cache = (ctx.config.modules or {}).get("lmod_cache")
    if lmod_cache:
        for m in modules:
            m["lmod_cache"] = lmod_cache if len(modules) == 1 else os.path.join(lmod_cache, os.path.basename(m["root"]))
    profiles = [dict(dataclasses.asdict(p), changed=False, pruned=[]) for p in (published or {}).get("profiles", [])]
    record = {
        "nodes": [_looked_in(ctx.store, n) for n in ctx.plan.nodes],
        "summary": f"{len(ctx.plan.nodes)} artifacts: {len(ctx.plan.nodes)} present, 0 to build",
        "modules": list(roots.values()),
        "templates": templates_digest((ctx.config.modules or {}).get("templates")),
        "profiles": profiles,
        "lock": {"path": os.path.abspath(lock_file), "exists": os.path.exists(lock_file),
                 "text_sha256": lock.text_sha256},
        "history": {"digest": history_meta.get("digest"), "n": history_meta.get("n"), "git": history_meta.get("git")},
    }
    if all(looked[-1][1] is not None for looked in record["nodes"]):   # every artifact complete somewhere
        ctx.plan_cache.remember(FACT, record)


def _file_sha256(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def lock_fact(lock_path):
    """The name of the fact holding the digest and text checksum of the plan's lock written for
    ``lock_path`` (paths in a lock are relative to its directory)."""
    return f"lock {os.path.dirname(os.path.abspath(lock_path))}"


def lock_unchanged(config_path, lock_path, refresh_probe=False):
    """The number of artifacts of the lock at ``lock_path`` when it is exactly the lock of the config's
    cached plan (``sitedist lock`` then has nothing to write), else None."""
    loaded = load_key(config_path, refresh_probe)
    if loaded.cache.header(loaded.key) is None:
        return None
    fact = loaded.cache.facts().get(lock_fact(lock_path))
    if fact and _file_sha256(lock_path) == fact["text_sha256"]:
        return fact["artifacts"]
    return None


def unchanged(config_path, lock_file, locked=False):
    """(stderr lines, stdout lines) of a sync that has nothing to do, or None when it may have
    something to do (then run the full sync). Raises what a sync raises for a config it cannot load or
    a store or tree it cannot write."""
    loaded = load_key(config_path)
    if loaded.cache.header(loaded.key) is None:
        return None
    record = loaded.cache.facts().get(FACT)
    if not record:
        return None
    config, store = loaded.config, loaded.store
    store.check_writable()
    check_publish_targets(config)
    lock = record["lock"]
    if lock["path"] != os.path.abspath(lock_file):
        return None
    if os.path.exists(lock_file) or locked:
        if _file_sha256(lock_file) != lock["text_sha256"]:
            return None
    for looked in record["nodes"]:
        if any(_marker(prefix) != stamp for prefix, stamp in looked):
            return None
    if templates_digest((config.modules or {}).get("templates")) != record["templates"]:
        return None
    for m in record["modules"]:
        if generation_of(os.path.join(m["root"], "current")) != m["generation"]:
            return None
        trees = m["links"] + ([CATALOG] if os.path.isdir(os.path.join(m["root"], "current", CATALOG)) else [])
        for tree in trees:
            link = os.path.join(m["root"], tree)
            if not (os.path.islink(link) and os.readlink(link) == f"current/{tree}"):
                return None
        if m["lmod_cache"] and not _lmod_cache_fresh(m["root"], m["lmod_cache"]):
            return None
    for p in record["profiles"]:
        if generation_of(p["root"]) != p["generation"]:   # a profile's root is its generation link
            return None
    past = history.records(store, config.path)
    if not past or past[-1].get("digest") != record["history"]["digest"] \
            or past[-1].get("git") != history.git_state(config.path):
        return None
    for m in record["modules"]:
        register_tree(store, "modules", m["root"])
    for p in record["profiles"]:
        register_tree(store, "profile", p["root"])
    out = []
    for m in record["modules"]:
        out.append(f"modules: unchanged (generation {m['generation']} in {m['root']})")
        out += [f"  note: {note}" for note in m["notes"]]
        out += [f"  to use them: module use {path}" for path in m["modulepath"]]
    for p in record["profiles"]:
        out.append(f"profile: {ProfileResult(**p)}")
    out.append("nothing to build")
    return [record["summary"]], out

