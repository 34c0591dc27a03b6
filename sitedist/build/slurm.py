"""Run a sync's build jobs as Slurm batch jobs: one job per artifact, Slurm doing the scheduling.

``run_slurm`` takes the same ``scheduler.Job`` list as ``scheduler.run_jobs`` and returns the same
``RunResult``, so that the report, the progress view and the publishing after it do not care where
the builds ran. Only the command each job runs differs: the caller gives ``command(job, cpus,
result_path)``, the argv of the single-artifact build entry point.

Submission: jobs go in dependency order, each with ``sbatch --parsable``, ``--dependency=afterok:<ids
of its dependencies>`` and ``--kill-on-invalid-dep=yes`` (a job whose dependency failed is cancelled
by Slurm, not left pending), a job name ``sitedist:<label>``, ``--cpus-per-task`` from the slot plan
(``cpus_per_build``, else the sync's slots; 1 for a recipe that does not build in parallel) and
``--time`` from the artifact's last recorded build time (twice it, plus 10 minutes) or the
configured default. Each job's batch script, output and result lie in ``job_dir``.

Watching, with no accounting needed: every ``poll`` seconds one ``squeue --states=all`` for the
jobs not finished yet. A job's outcome is the result file its command writes last (JSON with
``state`` 'built'/'reused'/'fetched' (from a binary cache)/'failed', ``error``, ``started``, ``finished``, ``node``); a job that
ended without one was killed (time limit, node failure, scancel) and counts as failed with Slurm's
state and reason. A job cancelled because a dependency failed counts as skipped.

Control: without ``keep_going`` the first failure cancels every job not running yet; running ones
finish. An exception in the watcher (KeyboardInterrupt; SIGTERM is turned into one while watching)
cancels every job of the run with ``scancel`` and waits until none is left in ``squeue``.
"""

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from sitedist.build.scheduler import JobRecord, RunResult, job_graph
from sitedist.errors import BuildError, ConfigError

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
# Options sitedist sets itself: an extra_args entry naming one would change what sitedist watches.
RESERVED = ("--parsable", "--dependency", "-d", "--kill-on-invalid-dep", "--job-name", "-J", "--output",
            "-o", "--error", "-e", "--wrap", "--cpus-per-task", "-c", "--array", "-a", "--wait", "-W")
TAIL_LINES = 20
RESULT_GRACE = 30.0  # seconds to wait for the result file of a job Slurm says has ended by itself


@dataclass
class SlurmSettings:
    """The ``executor:`` block of a site config with ``type: slurm`` (admin_docs/slurm.md)."""
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: Optional[str] = None  # default walltime in Slurm's syntax; None: the partition's default
    cpus_per_build: Optional[int] = None
    extra_args: tuple = ()
    poll: float = 2.0  # seconds between squeue calls

    @classmethod
    def from_config(cls, block, where=lambda *path: None):
        """Settings from a config's ``executor:`` block; ``where(*path)`` gives a setting's file:line.
        An ``extra_args`` entry naming an option sitedist sets itself is a ConfigError."""
        block = dict(block or {})
        for i, arg in enumerate(block.get("extra_args") or ()):
            if reserved_arg(arg):
                raise ConfigError(f"executor.extra_args: {arg!r} sets {reserved_arg(arg)}, which sitedist sets "
                                  f"itself for each build job", where=where("executor", "extra_args", i),
                                  hint="remove it; partition, account, qos, time and cpus_per_build are settings "
                                       "of their own")
        return cls(partition=block.get("partition"), account=block.get("account"), qos=block.get("qos"),
                   time=str(block["time"]) if block.get("time") is not None else None,
                   cpus_per_build=block.get("cpus_per_build"), extra_args=tuple(block.get("extra_args") or ()),
                   poll=float(block.get("poll", 2.0)))


def reserved_arg(arg):
    """The sitedist-set sbatch option ``arg`` would override, or None."""
    name = arg.split("=", 1)[0]
    for opt in RESERVED:
        if name == opt or (len(opt) == 2 and name.startswith(opt) and not name.startswith("--")):
            return opt
    return None


def walltime(last_duration, default):
    """``--time`` for a build: a margin over its last recorded duration (twice it plus 10 minutes, in
    whole minutes), else the configured default (None: leave it to the partition)."""
    if last_duration:
        return str(math.ceil((2 * last_duration + 600) / 60))
    return default


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")[:120] or "job"


@dataclass
class _Slurm:
    """One submitted job as the watcher knows it."""
    key: str
    job_id: str
    cpus: int
    script: str
    output: str
    result_path: str
    state: str = "PENDING"
    node: str = ""
    reason: str = ""
    start: Optional[float] = None
    end: Optional[float] = None
    outcome: Optional[str] = None  # 'done' | 'failed' | 'skipped'
    ended: Optional[float] = None  # when Slurm first said it ended, while its result is awaited


def _run(argv, **kw):
    try:
        return subprocess.run(argv, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found: the Slurm client commands (sbatch, squeue, scancel) must be "
                         f"on PATH where sync runs, or use --executor local") from None


def slurm_available(timeout=10):
    """Whether a Slurm controller answers ``sinfo`` here."""
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_slurm(jobs, settings: SlurmSettings, job_dir: str, command: Callable, slots: int,
              keep_going: bool = False, events: Optional[Callable[[dict], None]] = None,
              durations: Optional[dict] = None) -> RunResult:
    """Submit ``jobs`` (scheduler.Job) to Slurm, wait for all of them, return a RunResult with each
    job's Slurm facts in ``result.facts[key]`` (``slurm_job``, ``node``, ``job_log``)."""
    return _Watcher(jobs, settings, job_dir, command, slots, keep_going, events, durations or {}).run()


class _Watcher:
    def __init__(self, jobs, settings, job_dir, command, slots, keep_going, events, durations):
        self.jobs, self.deps, self.dependents, _ = job_graph(jobs)
        self.settings, self.job_dir, self.command = settings, job_dir, command
        self.slots, self.keep_going, self.events, self.durations = slots, keep_going, events, durations
        self.result = RunResult(deps=self.deps, labels={k: j.label or k for k, j in self.jobs.items()})
        self.submitted = {}  # key -> _Slurm
        self.stopped_by = None

    # --- the run ---------------------------------------------------------------------------------

    def run(self):
        os.makedirs(self.job_dir, exist_ok=True)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            for key in self._order():
                self._submit(key)
            while any(s.outcome is None for s in self.submitted.values()):
                self._poll()
                if any(s.outcome is None for s in self.submitted.values()):
                    time.sleep(self.settings.poll)
            # Skipped jobs are cancelled by Slurm (--kill-on-invalid-dep) or by us; make sure none is left
            # pending when the sync returns.
            self.cancel([s for s in self.submitted.values() if s.outcome == "skipped"], wait=True, quiet=5.0)
        except BaseException:
            self.cancel([s for s in self.submitted.values() if s.outcome is None], wait=True)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._lanes()
        return self.result

    def _order(self):
        done, order = set(), []

        def visit(key):
            if key in done:
                return
            done.add(key)
            for d in self.deps[key]:
                visit(d)
            order.append(key)

        for key in self.jobs:
            visit(key)
        return order

    def _emit(self, kind, key, **extra):
        if self.events is not None:
            self.events({"event": kind, "key": key, "label": self.result.labels[key], "time": time.time(), **extra})

    def _cpus(self, job):
        cpus = self.settings.cpus_per_build or self.slots
        return max(1, min(cpus, job.max_jobs) if job.max_jobs else cpus)

    def _submit(self, key):
        job = self.jobs[key]
        name = safe_name(key)
        cpus = self._cpus(job)
        result_path = os.path.join(self.job_dir, f"{name}.result.json")
        output = os.path.join(self.job_dir, f"{name}.%j.out")
        script = os.path.join(self.job_dir, f"{name}.sh")
        argv = list(self.command(job, cpus, result_path))
        with open(script, "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\n# sitedist: build {self.result.labels[key]} ({key})\nexec "
                    + " ".join(_quote(a) for a in argv) + "\n")
        os.chmod(script, 0o755)
        sbatch = ["sbatch", "--parsable", f"--job-name=sitedist:{safe_name(self.result.labels[key])}",
                  f"--output={output}", "--nodes=1", "--ntasks=1", f"--cpus-per-task={cpus}",
                  "--kill-on-invalid-dep=yes"]
        limit = walltime(self.durations.get(key), self.settings.time)
        if limit:
            sbatch.append(f"--time={limit}")
        for opt in ("partition", "account", "qos"):
            if getattr(self.settings, opt):
                sbatch.append(f"--{opt}={getattr(self.settings, opt)}")
        dep_ids = [self.submitted[d].job_id for d in self.deps[key]]
        if dep_ids:
            sbatch.append("--dependency=afterok:" + ":".join(dep_ids))
        sbatch += list(self.settings.extra_args) + [script]
        proc = _run(sbatch, cwd=self.job_dir)
        job_id = proc.stdout.strip().split(";")[0]
        if proc.returncode != 0 or not job_id.isdigit():
            raise BuildError(f"sbatch refused the job of {self.result.labels[key]}: "
                             f"{(proc.stderr or proc.stdout).strip()}\n  command: {' '.join(sbatch)}")
        sub = _Slurm(key, job_id, cpus, script, output.replace("%j", job_id), result_path)
        self.submitted[key] = sub
        self.result.facts[key] = {"slurm_job": job_id, "job_log": sub.output}
        self._emit("queued", key, job=job_id, jobs=cpus)

    # --- watching --------------------------------------------------------------------------------

    def _poll(self):
        open_jobs = {s.job_id: s for s in self.submitted.values() if s.outcome is None}
        seen = {}
        if open_jobs:
            proc = _run(["squeue", "-h", "--states=all", "-j", ",".join(open_jobs), "-o", "%i|%T|%N|%r"])
            if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
                return  # the controller did not answer this time (busy, restarting): ask again later
            for line in proc.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 4 and parts[0] in open_jobs:
                    seen[parts[0]] = parts[1:]
        for job_id, sub in open_jobs.items():
            state, node, reason = seen.get(job_id, ("", "", ""))
            self._update(sub, state, node, reason)
        for sub in list(open_jobs.values()):
            if sub.outcome is None and sub.state == "PENDING" and sub.reason == "DependencyNeverSatisfied":
                self.cancel([sub])  # Slurm should have; make sure it does not wait forever

    def _update(self, sub, state, node, reason):
        key = sub.key
        if sub.outcome is not None:
            return  # skipped meanwhile: a dependency failed earlier in this poll
        if node and node != "(null)":
            sub.node = node
        if state in ("RUNNING", "COMPLETING") and sub.start is None:
            sub.start = time.time()
            self.result.facts[key]["node"] = sub.node
            self._emit("start", key, job=sub.job_id, node=sub.node, jobs=sub.cpus, slot=0)
        elif state == "PENDING" and (state, reason) != (sub.state, sub.reason):
            self._emit("output", key, line=f"pending in Slurm as job {sub.job_id} ({reason})")
        if state:
            sub.state, sub.reason = state, reason
        result = _read_json(sub.result_path)
        if result is not None:
            self._finish(sub, result)
        elif state in TERMINAL or not state:
            # Ended (or gone from squeue) without a result; read once more: it may have been written
            # between the two looks. A job that exited by itself wrote one: on NFS this host may not see
            # the new file at once (cached directory entries), so it is looked for a while longer.
            result = _read_json(sub.result_path)
            if result is None and state in ("COMPLETED", "FAILED", ""):
                sub.ended = sub.ended or time.time()
                if time.time() - sub.ended < RESULT_GRACE:
                    _refresh(self.job_dir)
                    return
            failed_dep = next((d for d in self.deps[key] if self.submitted[d].outcome in ("failed", "skipped")),
                              None)
            if result is not None:
                self._finish(sub, result)
            elif state == "CANCELLED" and sub.start is None and (failed_dep or reason == "DependencyNeverSatisfied"):
                cause = failed_dep or self.deps[key][0]
                self._skip(sub, cause, f"needs {cause}, which failed (Slurm cancelled job {sub.job_id})")
            elif state == "CANCELLED" and sub.start is None and self.stopped_by:
                self._skip(sub, self.stopped_by, f"stopped after failure of {self.stopped_by}")
            else:
                what = state or "gone from squeue"
                self._fail(sub, f"Slurm job {sub.job_id} ended {what}"
                                + (f" ({reason})" if reason and reason != "None" else "")
                                + " without finishing its build (killed: time limit, node failure or scancel); "
                                  "nothing of it counts as built")

    def _finish(self, sub, result):
        sub.node = result.get("node") or sub.node
        self.result.facts[sub.key]["node"] = sub.node
        if sub.start is None:  # it ran between two polls
            self._emit("start", sub.key, job=sub.job_id, node=sub.node, jobs=sub.cpus, slot=0)
        sub.start = result.get("started") or sub.start or time.time()
        sub.end = result.get("finished") or time.time()
        if result.get("state") in ("built", "reused", "fetched"):
            self.result.facts[sub.key]["job_outcome"] = result["state"]
            sub.outcome = "done"
            self._record(sub, "done")
            self.result.succeeded.append(sub.key)
            self._emit("done", sub.key, duration=sub.end - sub.start, job=sub.job_id, node=sub.node)
        else:
            self._fail(sub, result.get("error") or f"the build failed; see {sub.output}")

    def _fail(self, sub, message):
        sub.outcome = "failed"
        sub.end = sub.end or time.time()
        sub.start = sub.start or sub.end
        self._record(sub, "failed")
        tail = _tail(sub.output)
        error = BuildError(f"{message}\n  Slurm job {sub.job_id} on {sub.node or 'no node'}, "
                           f"job log: {sub.output}" + (f"\n  last lines of the job log:\n{tail}" if tail else ""),
                           log_path=sub.output)
        self.result.failed[sub.key] = error
        self._emit("failed", sub.key, duration=sub.end - sub.start, error=str(error), job=sub.job_id, node=sub.node)
        if not self.keep_going and self.stopped_by is None:
            self.stopped_by = sub.key
            waiting = [s for s in self.submitted.values() if s.outcome is None and s.start is None]
            self.cancel(waiting)
            for s in waiting:
                if s.outcome is None:
                    self._skip(s, sub.key, f"stopped after failure of {sub.key}")
        else:
            # Slurm cancels the dependents (--kill-on-invalid-dep); they count as skipped now.
            stack = list(self.dependents[sub.key])
            while stack:
                child = stack.pop()
                s = self.submitted[child]
                if s.outcome is None:
                    self._skip(s, sub.key, f"needs {sub.key}, which failed (Slurm cancels job {s.job_id})")
                    stack.extend(self.dependents[child])

    def _skip(self, sub, cause, reason):
        sub.outcome = "skipped"
        self.result.skipped[sub.key] = cause
        self.result.reasons[sub.key] = reason
        self._emit("skipped", sub.key, cause=cause, reason=reason, job=sub.job_id)

    def _record(self, sub, state):
        self.result.records.append(JobRecord(sub.key, self.result.labels[sub.key], state, 0, sub.start, sub.end,
                                             sub.cpus))

    def _lanes(self):
        """Give each record a lane of the report's timeline: the lowest not busy when it started."""
        ends = []
        for rec in sorted(self.result.records, key=lambda r: r.start):
            lane = next((i for i, end in enumerate(ends) if end <= rec.start), len(ends))
            if lane == len(ends):
                ends.append(rec.end)
            ends[lane] = rec.end
            rec.slot = lane

    # --- control ---------------------------------------------------------------------------------

    def cancel(self, subs, wait=False, timeout=60.0, quiet=0.0):
        """scancel ``subs``; with ``wait``, until none of them is left in squeue (or ``timeout``). With
        ``quiet``, first give Slurm that many seconds to end them itself, and scancel only what is left."""
        ids = [s.job_id for s in subs]
        if not ids:
            return
        deadline = time.time() + quiet
        while True:
            left = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"]).stdout.split() if quiet else ids
            if not left or time.time() >= deadline:
                break
            time.sleep(0.5)
        if left:
            _run(["scancel", *left])
        if not wait:
            return
        deadline = time.time() + timeout
        while left and time.time() < deadline:
            left = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"]).stdout.split()
            if left:
                time.sleep(0.5)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _refresh(directory):
    """List ``directory``: on NFS this revalidates its cached entries, so a file created on another
    node shows up."""
    try:
        os.listdir(directory)
    except OSError:
        pass


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _tail(path, lines=TAIL_LINES):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.readlines()[-lines:]
    except OSError:
        return ""
    return "".join("    " + line for line in text).rstrip()


def _quote(arg):
    import shlex

    return shlex.quote(str(arg))
