"""A sync's builds through Slurm (``executor: {type: slurm}``), and the build of one artifact a Slurm job runs.

The submitting sync does everything but the builds (admin_docs/slurm.md): config, probe, plan, and
fetching every source into the store's source cache, once, here, before any job is submitted (compute
nodes often have no network); afterwards the report, modules and profiles. Each missing artifact is
one Slurm job (build/slurm.py) running ``build_one`` through the hidden command ``sitedist
build-artifact``, with the same Python and the same sitedist code as the submitting sync.

The job loads the config with the submitting host's probe report (saved in the job directory), so
that it resolves the same plan; it checks that the artifact's id is the one the submitter asked for.
It builds under the artifact's lock, as a local sync does, so a local sync and a Slurm job never
build one artifact twice; a job whose artifact is complete already exits at once. It writes its
outcome to a result file the watcher reads (no accounting needed), and exits non-zero on failure so
that Slurm cancels the jobs depending on it. ``SLURM_*`` variables are dropped from its environment
before anything runs (the build environment is made from nothing anyway).
"""

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

import sitedist
from sitedist.errors import BuildError, ConfigError, SitedistError


def job_root(store):
    return os.path.join(store.meta, "jobs")


def prefetch_sources(ctx, fetcher, todo):
    """Every source the builds of ``todo`` need, into the store's source cache, here and now."""
    for node in todo:
        source = node.source or {}
        if node.kind != "package":
            continue
        if "sha256" in source:
            fetcher.fetch(source, where=node.recipe.where("versions", node.version))
        elif "git" in source:
            scratch = tempfile.mkdtemp(prefix="prefetch-", dir=ctx.store.tmp_dir)
            try:
                fetcher.fetch_git(source, os.path.join(scratch, "src"))  # fills the cache's git mirror
            finally:
                shutil.rmtree(scratch, ignore_errors=True)


def check_slurm(config):
    """The config's Slurm settings, once Slurm is known to answer here; a SitedistError otherwise."""
    from sitedist.build.slurm import SlurmSettings, slurm_available

    settings = SlurmSettings.from_config(config.executor, where=config.where)
    if not slurm_available():
        raise BuildError("executor slurm: 'sinfo' does not answer on this host, so no Slurm controller can be "
                         "reached (or the Slurm client commands are not installed). Nothing was built.\n"
                         "  hint: run the sync on a login node of the cluster, or use --executor local")
    return settings


def build_through_slurm(ctx, fetcher, jobs_list, slots, keep_going=False, events=None, durations=None):
    """Submit one Slurm job per entry of ``jobs_list`` (scheduler.Job of ``ctx.to_build()``), wait for
    all, return the RunResult."""
    from sitedist.build.slurm import SlurmSettings, run_slurm
    from sitedist.sync import probe_report_for

    settings = SlurmSettings.from_config(ctx.config.executor, where=ctx.config.where)
    todo = [n for n in ctx.plan.nodes if n.key in {j.key for j in jobs_list}]
    prefetch_sources(ctx, fetcher, todo)
    job_dir = os.path.join(job_root(ctx.store), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}")
    os.makedirs(job_dir, exist_ok=True)
    probe_path = os.path.join(job_dir, "probe.json")
    with open(probe_path, "w", encoding="utf-8") as f:
        json.dump(probe_report_for(ctx.config).to_json(), f)
    config_path = os.path.abspath(ctx.config.path)
    code_dir = os.path.dirname(os.path.dirname(os.path.abspath(sitedist.__file__)))
    pythonpath = os.pathsep.join([code_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    prefixes = {n.key: ctx.store.prefix(n.name, n.version, n.aid) for n in todo}

    def command(job, cpus, result_path):
        # The same interpreter and the same sitedist code as this sync, whatever 'sitedist' is on PATH.
        return ["env", f"PYTHONPATH={pythonpath}", sys.executable, "-m", "sitedist.cli.main", "build-artifact",
                config_path, "--key", job.key, "--prefix", prefixes[job.key], "--jobs", str(cpus),
                "--probe", probe_path, "--result", result_path, "--cache-mode", ctx.cache_mode]

    return run_slurm(jobs_list, settings, job_dir, command, slots=slots, keep_going=keep_going, events=events,
                     durations=durations)


class _Terminated(BaseException):
    """SIGTERM (scancel, the time limit) while building: unwind, so the builder removes the prefix."""


def build_one(config_path, key, prefix, jobs, probe_path, result_path, cache_mode="use", out=sys.stderr):
    """The build of one artifact by a Slurm job. Returns the exit status (0: built or already complete)."""
    job = os.environ.get("SLURM_JOB_ID")
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    for name in [n for n in os.environ if n.startswith("SLURM")]:
        del os.environ[name]
    started = time.time()
    outcome = {"state": "failed", "key": key, "job": job, "node": node, "started": started}

    def on_term(signum, frame):
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        if os.path.exists(os.path.join(prefix, ".sitedist", "complete")):
            outcome["state"] = "reused"
            print(f"sitedist: {key} is complete already: nothing to build", file=out)
            return 0
        outcome["state"] = _build(config_path, key, prefix, jobs, probe_path, job, node, cache_mode, out)
        return 0
    except _Terminated as exc:
        outcome["error"] = (f"the build of {key} was stopped by {exc} (scancel, or the job's time limit) on {node}; "
                            f"its prefix was removed, the next sync builds it again")
        print(f"sitedist: {outcome['error']}", file=out)
        return 143
    except SitedistError as exc:
        outcome["error"] = str(exc)
        print(f"error: {exc}", file=out)
        return 1
    except BaseException as exc:  # noqa: B902 - reported to the watcher, then re-raised
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        outcome["finished"] = time.time()
        tmp = f"{result_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(outcome, f)
        os.replace(tmp, result_path)


def _build(config_path, key, prefix, jobs, probe_path, job, node, cache_mode, out):
    from sitedist.build.scheduler import JobContext
    from sitedist.host.probe import ProbeReport
    from sitedist.sync import fetch_or_build, load, make_builder, use_caches

    with open(probe_path, encoding="utf-8") as f:
        report = ProbeReport.from_json(json.load(f))
    ctx = load(config_path, probe_report=report)
    found = [n for n in ctx.plan.nodes if n.key == key]
    if not found or ctx.store.prefix(found[0].name, found[0].version, found[0].aid) != prefix:
        raise ConfigError(f"{key} is not in the plan of {config_path} as resolved on {node}: the config or its "
                          f"recipes changed since the sync submitted this job, or the plan depends on the node "
                          f"(target: native on nodes of another CPU)",
                          hint="name targets explicitly (target: x86_64_v3) and sync again")
    node_obj = found[0]
    missing = [d.key for d in node_obj.all_deps() if ctx.states[d.key] not in ("complete", "upstream")]
    if missing:
        raise BuildError(f"{key}: dependencies not complete: {', '.join(missing)} (their jobs did not finish)")
    builder = make_builder(ctx, record_extra={"executor": {"type": "slurm", "job": job, "node": node}})
    use_caches(ctx, cache_mode, on_note=lambda note: print(f"sitedist: {note}", file=out, flush=True))
    print(f"sitedist: building {node_obj.label} ({key}) on {node} with {jobs} CPUs", file=out, flush=True)
    state = fetch_or_build(ctx, builder, node_obj, JobContext(key, jobs))  # a binary cache first, as a local sync
    print(f"sitedist: {key} {state}", file=out)
    return state
