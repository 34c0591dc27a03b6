"""The build of one artifact by a Slurm job of a sync (``sitedist build-artifact``; the submitting side
is sitedist/ops/slurm.py, admin_docs/slurm.md).

The job loads the config with the submitting host's probe report (saved in the job directory), so
that it resolves the same plan; it checks that the artifact's id is the one the submitter asked for.
It builds under the artifact's lock, as a local sync does; a job whose artifact is complete already
exits at once. It writes its outcome to a result file the watcher reads, and exits non-zero on failure
so that Slurm cancels the jobs depending on it. ``SLURM_*`` variables are dropped from its environment
before anything runs.
"""

import json
import os
import signal
import socket
import sys
import time

from sitedist.build.scheduler import JobContext
from sitedist.core.durable import write_atomic
from sitedist.errors import BuildError, ConfigError, SitedistError
from sitedist.host.probe import ProbeReport
from sitedist.ops.sync import fetch_or_build, load, make_builder, use_caches


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
        write_atomic(result_path, json.dumps(outcome))


def _build(config_path, key, prefix, jobs, probe_path, job, node, cache_mode, out):
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
