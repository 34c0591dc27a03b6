"""One ``sitedist sync``: config -> host -> plan -> build -> publish -> report.

Each stage takes what the previous one produced; nothing is written before the plan is complete and
valid, so a config error, a missing recipe, an unknown toolchain or a module name clash leaves the
store, the module tree and the profiles as they were.
"""

import os
import time
from dataclasses import dataclass, field

import psutil

from sitedist.build.builder import Builder
from sitedist.build.linkcheck import LinkPolicy
from sitedist.build.report import load_report
from sitedist.build.report import write_report as write_build_report
from sitedist.build.scheduler import Job, run_jobs
from sitedist.core.gcroots import InUse
from sitedist.core.sources import Fetcher
from sitedist.core.store import Store
from sitedist.errors import ConfigError, SitedistError
from sitedist.host.target import target_flags
from sitedist.host.toolchains import Host
from sitedist.ops.noop import cache_dir, check_publish_targets, load_key, probe_report_for
from sitedist.ops.publish import check_modules, publish_all
from sitedist.ops.slurm import build_through_slurm, check_slurm
from sitedist.profiles import check_profiles
from sitedist.spec.doc_cache import DocCache
from sitedist.spec.plan_cache import dir_stamps
from sitedist.spec.resolve import Resolver, why


@dataclass
class Context:
    """What the earlier stages produced, for the later ones and for the CLI."""
    config: object
    store: Store
    host: Host
    plan: object
    states: dict = field(default_factory=dict)    # node key -> 'complete'|'upstream'|'missing'|'incomplete'
    prefixes: dict = field(default_factory=dict)  # node key -> prefix (own store or upstream)
    cache_mode: str = "use"   # binary caches: 'use' (before building), 'off' (--no-cache), 'only' (--cache-only)
    installer: object = None  # sitedist.cache.install.Installer of the config's caches, when it has some
    plan_cache: object = None  # spec.plan_cache.PlanCache holding this plan, and the plan's key in it
    plan_key: str = ""

    def to_build(self):
        return [n for n in self.plan.nodes if self.states[n.key] not in ("complete", "upstream")]


def load(config_path, refresh_probe=False, probe_report=None, adjust=None):
    """Stages 1-3: load and validate the config, probe the host (or take ``probe_report``), resolve and
    hash the plan (or load it from the plan cache). ``adjust(config)`` may return a changed config first
    (a past commit's config with today's store and publish roots: sitedist.ops.locking)."""
    loaded = load_key(config_path, refresh_probe, probe_report, adjust)
    plan, host = resolve_plan(loaded.config, loaded.host, loaded.targets, loaded.cache, loaded.key)
    ctx = Context(config=loaded.config, store=loaded.store, host=host, plan=plan, plan_cache=loaded.cache,
                  plan_key=loaded.key)
    refresh_states(ctx)
    if loaded.config.profiles:
        check_profiles(ctx)
    return ctx


def resolve_plan(config, host, targets, cache, key):
    """The plan of ``config`` on ``host``: from the plan ``cache`` when its entry for ``key``
    (spec.plan_cache.plan_key) is valid, else resolved (and cached). Returns (plan, host): a cached
    plan comes with the host it was resolved on (equal to ``host``, plus the build tools resolving
    looked up)."""
    hit = cache.load(key)
    if hit is not None:
        return hit
    dirs = dir_stamps(config.recipe_dirs)
    docs = DocCache.for_config(config.path, cache_dir())
    resolver = Resolver(config, host, targets, docs)
    plan = resolver.plan()
    docs.save()
    files, trees = resolver.inputs(docs)
    cache.save(key, plan, host, files=files, dirs=dirs, trees=trees)
    return plan, host


def with_documents(ctx):
    """The context, its recipes' parsed documents restored if its plan came from the plan cache
    (what needs them: errors naming a recipe's line, a lock's per-key digests)."""
    if ctx.plan_cache is not None:
        ctx.plan_cache.restore_documents(ctx.plan)
    return ctx


def refresh_states(ctx):
    store = ctx.store
    for node in ctx.plan.nodes:
        state = store.state(node.name, node.version, node.aid)
        ctx.states[node.key] = state
        if state == "upstream":
            ctx.prefixes[node.key] = store.find(node.name, node.version, node.aid)
        else:
            ctx.prefixes[node.key] = store.prefix(node.name, node.version, node.aid)


def describe_plan(ctx):
    """Lines for people: what exists, what will be built and why."""
    lines = []
    missing = ctx.to_build()
    for node in ctx.plan.nodes:
        state = ctx.states[node.key]
        mark = {"complete": "  [present] ", "upstream": "  [upstream]", "missing": "  [build]   ",
                "incomplete": "  [rebuild] "}[state]
        line = f"{mark} {node.label:<34} {node.aid}"
        if state == "missing":
            line += f"  ({why(ctx.store, node)})"
        elif state == "incomplete":
            line += "  (an interrupted build left an incomplete prefix; it will be removed)"
        elif state == "upstream":
            line += f"  {ctx.prefixes[node.key]}"
        if state in ("missing", "incomplete") and (cache := cache_for(ctx, node)) is not None:
            line = f"  [cache]    {node.label:<34} {node.aid}  (from {cache})"
        lines.append(line)
    if ctx.config.modules:
        lines += [f"  modules: {note}" for note in check_modules(ctx)]
    from_cache = sum(1 for line in lines if line.startswith("  [cache]"))
    lines.append(f"{len(ctx.plan.nodes)} artifacts: {len(ctx.plan.nodes) - len(missing)} present, "
                 f"{len(missing) - from_cache} to build" + (f", {from_cache} from caches" if from_cache else ""))
    return lines


@dataclass
class SyncResult:
    ctx: Context
    built: list
    failed: dict
    skipped: dict
    reasons: dict = field(default_factory=dict)
    fetched: list = field(default_factory=list)  # keys installed from a binary cache, not built
    published: object = None
    report: dict = None

    @property
    def ok(self):
        return not self.failed and not self.skipped


def use_caches(ctx, mode="use", on_wait=None, on_note=None):
    """Set how this sync uses the config's binary caches (admin_docs/caches.md)."""
    from sitedist.cache.install import Installer, caches_from_config

    ctx.cache_mode = mode
    ctx.installer = None
    if mode != "off" and ctx.config.caches:
        ctx.installer = Installer(ctx.store, caches_from_config(ctx.config), on_wait=on_wait, on_note=on_note)
    elif mode == "only":
        raise ConfigError("--cache-only: the config lists no 'caches:'", where=ctx.config.path)
    return ctx.installer


def cache_for(ctx, node):
    """The url of the first cache that has this package artifact, else None (no lookup when off)."""
    if ctx.installer is None or node.kind != "package":
        return None
    cache = ctx.installer.find(node.aid)
    return cache.url if cache else None


def make_builder(ctx, on_wait=None, record_extra=None):
    """The Builder of this context's plan (a sync's, or a Slurm job's building one artifact of it)."""
    with_documents(ctx)   # a build's errors name the recipe's line
    store = ctx.store
    fetcher = Fetcher(store.src_dir, ctx.config.mirrors, lock_dir=store.lock_dir,
                      upstream_caches=[u.src_dir for u in store.upstreams])
    flags = {}
    for node in ctx.plan.nodes:
        if node.kind == "package":
            flags.setdefault((node.target, node.toolchain.name),
                             tuple(target_flags(node.target, node.toolchain.compiler.probed)))
    return Builder(store, fetcher, ctx.prefixes, keep_failed=ctx.config.keep_failed, on_wait=on_wait,
                   target_flags=flags, record_extra=record_extra, link_policy=link_policy(ctx))


def link_policy(ctx):
    """What the builds of this plan may link (build/linkcheck.py): the stores, the plan's packages, the
    host packages' prefixes and library directories, and each probed MPI's library sonames."""
    host_dirs, mpi_libraries = [], {}
    for pkg in (ctx.host.packages.values() if ctx.host is not None else ()):
        probed = pkg.probed
        host_dirs += [getattr(probed, "prefix", "") or ""] + [getattr(probed, "lib_dir", "") or ""]
        host_dirs += [f[2:] for f in getattr(probed, "link_flags", ()) if f.startswith("-L")]
        if pkg.kind == "mpi":
            mpi_libraries[pkg.name] = tuple(getattr(probed, "libraries", ()))
    store = ctx.store
    return LinkPolicy([store.root] + [u.root for u in store.upstreams],
                      plan_packages=[(n.name, ctx.prefixes[n.key]) for n in ctx.plan.nodes
                                     if n.kind == "package" and n.key in ctx.prefixes],
                      host_prefixes=host_dirs, mpi_libraries=mpi_libraries)


def fetch_or_build(ctx, builder, node, job_ctx):
    """One missing artifact: from a binary cache if one has it, else built (a local sync's scheduler
    thread and a Slurm job both do this). Returns 'fetched', 'reused' or 'built'."""
    if ctx.installer is not None and node.kind == "package":
        outcome = ctx.installer.install(builder.spec_record(node, None, None), job_ctx)
        if outcome:
            return outcome
    if ctx.cache_mode == "only" and node.kind == "package":
        from sitedist.errors import CacheError

        raise CacheError(f"{node.label} ({node.aid}) is in none of the caches (or none could serve it) and "
                         f"--cache-only forbids building it"
                         + "".join(f"\n    {n}" for n in (ctx.installer.notes if ctx.installer else [])
                                   if node.aid in n or "skipped" in n))
    return builder.build(node, job_ctx)


def build_missing(ctx, jobs, keep_going=False, events=None, on_wait=None, executor="local"):
    """Stage 4: build what is missing, in dependency order, independent builds in parallel: here, or
    as Slurm jobs (executor 'slurm', sitedist/ops/slurm.py)."""
    store = ctx.store
    builder = make_builder(ctx, on_wait)
    todo = ctx.to_build()
    todo_keys = {n.key for n in todo}
    known = past_durations(store)
    jobs_list = [
        Job(key=n.key, deps=tuple(d.key for d in n.all_deps() + n.deps.get("host", []) + n.deps.get("tools", [])
                                if d.key in todo_keys),
            run=(lambda c, n=n: fetch_or_build(ctx, builder, n, c)), label=n.label,
            estimate=estimate(n, known),
            max_jobs=0 if (n.recipe is None or n.recipe.parallel) else 1)
        for n in todo
    ]
    if executor == "slurm":
        result = build_through_slurm(ctx, builder.fetcher, jobs_list, slots=jobs, keep_going=keep_going,
                                     events=events, durations={n.key: known.get(n.label) for n in todo},
                                     probe_report=probe_report_for(ctx.config))
    else:
        result = run_jobs(jobs_list, slots=jobs, keep_going=keep_going, events=events)
    for key in result.succeeded:
        ctx.states[key] = "complete"
    return result


def estimate(node, known):
    """Seconds a build is expected to take, for the scheduler's priority: its last build's time in this
    store, else its recipe's build_estimate, else 10 (a fresh store would otherwise start the longest
    build, e.g. OpenBLAS, last among its equals)."""
    if node.kind != "package":
        return 0.01
    return known.get(node.label) or (node.recipe and node.recipe.build_estimate) or 10.0


def past_durations(store):
    """label -> seconds of its last build, from the last report: the scheduler's critical path."""
    try:
        report = load_report(store.reports_dir)
    except SitedistError:
        return {}
    return {p["label"]: p["duration"] for p in report.get("packages", []) if p.get("duration")}


def finish_sync(ctx, jobs=None, keep_going=False, events=None, on_wait=None, executor=None):
    """Stages 4-6 on a loaded context. ``executor``: 'local' or 'slurm' (default: the config's)."""
    started = time.time()
    jobs = jobs or ctx.config.jobs or _default_jobs()
    executor = executor or ctx.config.executor.get("type", "local")
    ctx.store.check_writable()
    check_publish_targets(ctx.config)
    if executor == "slurm" and ctx.to_build():
        check_slurm(ctx.config)  # the settings and the controller, before anything is written
    if ctx.to_build():
        check_modules(ctx)  # a module name clash stops the sync before anything is built
    ctx.store.init()
    # Everything this sync uses is a GC root until it ends, so a concurrent GC leaves it alone. States
    # are read again once the root is registered: a GC that ran since the plan may have swept something.
    in_use = set(ctx.prefixes.values()) | {ctx.store.prefix(n.name, n.version, n.aid) for n in ctx.plan.nodes}
    with InUse(ctx.store, in_use, what=f"sync {ctx.config.path}"):
        refresh_states(ctx)
        result = build_missing(ctx, jobs, keep_going, events, on_wait, executor) if ctx.to_build() else None
        fetched_ids = dict(ctx.installer.fetched) if ctx.installer else {}
        fetched = [n.key for n in ctx.plan.nodes if result and n.key in result.succeeded
                   and (n.aid in fetched_ids or result.facts.get(n.key, {}).get("job_outcome") == "fetched")]
        sync_result = SyncResult(ctx=ctx, built=[k for k in (result.succeeded if result else []) if k not in fetched],
                                 fetched=fetched,
                                 failed=dict(result.failed) if result else {},
                                 skipped=dict(result.skipped) if result else {},
                                 reasons=dict(result.reasons) if result else {})
        if result is not None:
            sync_result.report = write_report(ctx, result, started, jobs, executor)
        if sync_result.ok:
            sync_result.published = publish(ctx)
    return sync_result


def _default_jobs():
    return psutil.cpu_count(logical=True) or 1


def write_report(ctx, result, started, jobs, executor="local"):
    extra = {}
    for node in ctx.plan.nodes:
        build_dir = ctx.store.build_path(node.name, node.version, node.aid)
        extra[node.key] = {"prefix": ctx.prefixes[node.key],
                           "log": os.path.join(build_dir, "build.log") if node.key in result.failed
                           else os.path.join(ctx.prefixes[node.key], ".sitedist", "build.log.gz")}
    fetched = dict(ctx.installer.fetched) if ctx.installer else {}
    for node in ctx.plan.nodes:
        if node.aid in fetched:
            extra[node.key]["from_cache"] = fetched[node.aid]
    meta = {"config": ctx.config.path, "store": ctx.store.root, "slots": jobs, "executor": executor, "started": started,
            "finished": time.time(), "nodes": extra}
    try:
        return write_build_report(ctx.store.reports_dir, result, meta)
    except OSError as exc:
        raise SitedistError(f"cannot write the build report: {exc}") from None


def publish(ctx):
    """Stage 5: module tree and profiles, each switched in atomically. Returns what was published."""
    return publish_all(ctx)
