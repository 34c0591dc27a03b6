"""A sync's builds through Slurm (``executor: {type: slurm}``); the build of one artifact a Slurm job runs
is in sitedist/ops/slurm_job.py.

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
import sys
import tempfile
import time

import sitedist
from sitedist.build.slurm import SlurmSettings, run_slurm, slurm_available
from sitedist.errors import BuildError


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
    settings = SlurmSettings.from_config(config.executor, where=config.where)
    if not slurm_available():
        raise BuildError("executor slurm: 'sinfo' does not answer on this host, so no Slurm controller can be "
                         "reached (or the Slurm client commands are not installed). Nothing was built.\n"
                         "  hint: run the sync on a login node of the cluster, or use --executor local")
    return settings


def build_through_slurm(ctx, fetcher, jobs_list, slots, keep_going=False, events=None, durations=None,
                        probe_report=None):
    """Submit one Slurm job per entry of ``jobs_list`` (scheduler.Job of ``ctx.to_build()``), wait for
    all, return the RunResult. ``probe_report``: this host's probe (host.probe.ProbeReport), handed to
    the jobs so that they resolve the same plan."""
    settings = SlurmSettings.from_config(ctx.config.executor, where=ctx.config.where)
    todo = [n for n in ctx.plan.nodes if n.key in {j.key for j in jobs_list}]
    prefetch_sources(ctx, fetcher, todo)
    job_dir = os.path.join(job_root(ctx.store), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}")
    os.makedirs(job_dir, exist_ok=True)
    probe_path = os.path.join(job_dir, "probe.json")
    with open(probe_path, "w", encoding="utf-8") as f:
        json.dump(probe_report.to_json(), f)
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
