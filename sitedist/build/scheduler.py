"""Run a DAG of build jobs in threads, sharing N CPU slots between concurrent builds and their make -j.

Policy, decided each time a build ends (the only moment new jobs can become ready):
- Ready jobs are taken in order of their longest path to a sink (sum of estimates, the job included),
  so the critical path goes first; ties keep the input order.
- As many ready jobs start as there are free slots (more independent builds beat a wider make -j),
  then the free slots left over are dealt out one by one in priority order, up to each job's
  ``max_jobs``. A lone ready job on an idle machine gets every slot.
- The sum of ``memory`` of running jobs stays within the memory budget (by default what
  ``psutil.virtual_memory().available`` said at the start). A job that does not fit waits, and jobs
  behind it that fit may start; a job bigger than the whole budget runs alone.
- A failed job skips its dependents, transitively. Without ``keep_going`` no new job starts after
  a failure: running ones finish and everything else is skipped ("stopped after failure of X").
- An exception in the scheduler itself (KeyboardInterrupt, an ``events`` callback raising) sets
  every running job's ``cancelled`` event, waits for those jobs to return, and propagates.

``events`` is called from the thread that called ``run_jobs``, never concurrently, with dicts
``{'event': 'start'|'output'|'done'|'failed'|'skipped', 'key', 'label', 'time', ...}``: start adds
``slot``, ``jobs``; output adds ``line`` (coalesced: the latest line when the scheduler gets to it);
done/failed add ``duration`` (failed also ``error``, a string); skipped adds ``cause`` (the failed
key) and ``reason``.
"""

import heapq
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import psutil


@dataclass
class JobContext:
    key: str
    jobs: int  # CPU slots granted to this build: its make -j
    cancelled: threading.Event = field(default_factory=threading.Event)
    post: Optional[Callable[[str], None]] = field(default=None, repr=False, compare=False)

    def output(self, line: str):
        """Report the latest line of the build's output, for the live view."""
        if self.post is not None:
            self.post(line)


@dataclass
class Job:
    key: str
    deps: tuple  # keys that must finish first; keys not in the job list count as satisfied
    run: Callable[[JobContext], None]  # raises to fail
    label: str = ""
    estimate: float = 1.0  # expected seconds, for the priority
    max_jobs: int = 0  # most CPU slots this build can use (0 = any)
    memory: int = 0  # bytes it expects to need (0 = unknown)


@dataclass
class JobRecord:
    key: str
    label: str
    state: str  # 'done' or 'failed'
    slot: int  # lowest of the slot numbers (0 .. slots-1) it held
    start: float  # time.time()
    end: float
    jobs: int


@dataclass
class RunResult:
    succeeded: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # key -> exception
    skipped: dict = field(default_factory=dict)  # key -> key of the failed job that caused the skip
    records: list = field(default_factory=list)  # JobRecord of every job that ran, in order of ending
    reasons: dict = field(default_factory=dict)  # skipped key -> why, in words
    deps: dict = field(default_factory=dict)  # key -> its dependencies within the run
    labels: dict = field(default_factory=dict)  # key -> label
    facts: dict = field(default_factory=dict)  # key -> what an executor knows of its job (Slurm job id, node)

    @property
    def ok(self):
        return not self.failed and not self.skipped


def run_jobs(jobs, slots: int, keep_going: bool = False, events: Optional[Callable[[dict], None]] = None,
             memory: Optional[int] = None) -> RunResult:
    """Run ``jobs`` (a list of Job) on ``slots`` CPU slots; ``memory`` is the budget in bytes."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, not {slots}")
    return _Scheduler(jobs, slots, keep_going, events, memory).run()


def job_graph(jobs):
    """(jobs by key, deps within the list, dependents, longest path to a sink). ValueError on a
    duplicate key or a dependency cycle."""
    by_key = {}
    for job in jobs:
        if job.key in by_key:
            raise ValueError(f"duplicate job key {job.key!r}")
        by_key[job.key] = job
    deps = {key: tuple(dict.fromkeys(d for d in job.deps if d in by_key)) for key, job in by_key.items()}
    dependents = {key: [] for key in by_key}
    for key, ds in deps.items():
        for d in ds:
            dependents[d].append(key)
    unresolved = {key: len(ds) for key, ds in dependents.items()}
    stack = [key for key, n in unresolved.items() if n == 0]
    level = {}
    while stack:
        key = stack.pop()
        level[key] = by_key[key].estimate + max((level[c] for c in dependents[key]), default=0.0)
        for d in deps[key]:
            unresolved[d] -= 1
            if unresolved[d] == 0:
                stack.append(d)
    if len(level) < len(by_key):
        raise ValueError("dependency cycle: " + " -> ".join(_cycle(dependents, level)) + " (each needs the next)")
    return by_key, deps, dependents, level


def _cycle(dependents, resolved):
    # Every unresolved job has an unresolved dependent, so walking dependents must come round.
    path, seen = [], {}
    key = next(k for k in dependents if k not in resolved)
    while key not in seen:
        seen[key] = len(path)
        path.append(key)
        key = next(c for c in dependents[key] if c not in resolved)
    cycle = path[seen[key]:] + [key]
    return cycle[::-1]


@dataclass
class _Running:
    job: Job
    ctx: JobContext
    held: list
    start: float
    thread: Optional[threading.Thread] = None
    line: str = ""
    pending: bool = False  # an output message is queued and not yet handled


def _shares(chosen, free):
    """Deal ``free`` slots to the chosen jobs: one each, then the rest in priority order."""
    shares = [1] * len(chosen)
    spare = free - len(chosen)
    while spare > 0:
        room = [i for i, job in enumerate(chosen) if not job.max_jobs or shares[i] < job.max_jobs]
        if not room:
            break
        for i in room[:spare]:
            shares[i] += 1
        spare -= min(spare, len(room))
    return shares


class _Scheduler:
    def __init__(self, jobs, slots, keep_going, events, memory):
        self.jobs, self.deps, self.dependents, self.level = job_graph(jobs)
        self.order = {key: i for i, key in enumerate(self.jobs)}
        self.keep_going, self.events = keep_going, events
        self.budget = psutil.virtual_memory().available if memory is None else memory
        self.free = list(range(slots))
        self.waiting = {key: len(ds) for key, ds in self.deps.items()}
        self.ready = []
        for key, n in self.waiting.items():
            if n == 0:
                self._push(key)
        self.running = {}
        self.messages = queue.Queue()
        self.stopped_by = None
        self.result = RunResult(deps=self.deps, labels={k: j.label or k for k, j in self.jobs.items()})

    def run(self):
        try:
            while True:
                if self.stopped_by is None:
                    self._start_ready()
                if not self.running:
                    break
                self._handle(*self.messages.get())
        except BaseException:
            for run in self.running.values():
                run.ctx.cancelled.set()
            for run in self.running.values():
                run.thread.join()
            raise
        ended = set(self.result.succeeded) | set(self.result.failed) | set(self.result.skipped)
        for key in self.jobs:
            if key not in ended:
                self._skip(key, self.stopped_by, f"stopped after failure of {self.stopped_by}")
        return self.result

    def _push(self, key):
        heapq.heappush(self.ready, (-self.level[key], self.order[key], key))

    def _emit(self, kind, key, **extra):
        if self.events is not None:
            self.events({"event": kind, "key": key, "label": self.result.labels[key], "time": time.time(), **extra})

    def _start_ready(self):
        used = sum(run.job.memory for run in self.running.values())
        chosen, passed = [], []
        while self.ready and len(chosen) < len(self.free):
            item = heapq.heappop(self.ready)
            job = self.jobs[item[2]]
            if job.memory and used + job.memory > self.budget and (self.running or chosen):
                passed.append(item)
                continue
            chosen.append(job)
            used += job.memory
        for item in passed:
            heapq.heappush(self.ready, item)
        for job, share in zip(chosen, _shares(chosen, len(self.free))):
            self._start(job, share)

    def _start(self, job, share):
        held, self.free = self.free[:share], self.free[share:]
        run = _Running(job=job, ctx=JobContext(job.key, share), held=held, start=time.time())

        def post(line):
            run.line = line
            if not run.pending:
                run.pending = True
                self.messages.put(("output", job.key, None, None))

        run.ctx.post = post
        run.thread = threading.Thread(target=self._work, args=(job, run.ctx), name=f"build {job.key}", daemon=True)
        self.running[job.key] = run
        run.thread.start()
        self._emit("start", job.key, slot=held[0], jobs=share)

    def _work(self, job, ctx):
        try:
            job.run(ctx)
            error = None
        except BaseException as exc:  # a build's failure, whatever it raised, is the build's
            error = exc
        self.messages.put(("end", job.key, error, time.time()))

    def _handle(self, kind, key, error, end):
        if kind == "output":
            run = self.running.get(key)
            if run is not None:
                run.pending = False
                self._emit("output", key, line=run.line)
            return
        run = self.running.pop(key)
        run.thread.join()
        self.free = sorted(self.free + run.held)
        state = "done" if error is None else "failed"
        self.result.records.append(JobRecord(key, self.result.labels[key], state, run.held[0], run.start, end,
                                             run.ctx.jobs))
        if error is None:
            self.result.succeeded.append(key)
            self._emit("done", key, duration=end - run.start)
            for child in self.dependents[key]:
                self.waiting[child] -= 1
                if self.waiting[child] == 0 and child not in self.result.skipped:
                    self._push(child)
            return
        self.result.failed[key] = error
        self._emit("failed", key, duration=end - run.start, error=str(error) or type(error).__name__)
        if self.stopped_by is None and not self.keep_going:
            self.stopped_by = key
        stack = list(self.dependents[key])
        while stack:
            child = stack.pop()
            if child not in self.result.skipped:
                self._skip(child, key, f"needs {key}, which failed")
                stack.extend(self.dependents[child])

    def _skip(self, key, cause, reason):
        self.result.skipped[key] = cause
        self.result.reasons[key] = reason
        self._emit("skipped", key, cause=cause, reason=reason)
