"""The parallel build scheduler, with synthetic jobs: ordering, overlap and slot sharing are checked
with barriers, events and the run's records, never with timing assertions."""

import os
import random
import threading
import time

import pytest

from sitedist.build.scheduler import Job, job_graph, run_jobs

WAIT = 20  # seconds a synthetic job waits for a barrier or event before failing the test


def noop(ctx):
    pass


def grants(record):
    return {r.key: r.jobs for r in record}


def test_independent_jobs_overlap():
    both = threading.Barrier(2, timeout=WAIT)  # passes only if both jobs run at the same time
    result = run_jobs([Job("a", (), lambda c: both.wait()), Job("b", (), lambda c: both.wait())], slots=2)
    assert result.ok and sorted(result.succeeded) == ["a", "b"]
    a, b = sorted(result.records, key=lambda r: r.key)
    assert a.start < b.end and b.start < a.end
    assert {a.slot, b.slot} == {0, 1}


def random_dag(rng, n):
    return {f"p{i}": tuple(f"p{j}" for j in rng.sample(range(i), min(i, rng.randint(0, 3)))) for i in range(n)}


@pytest.mark.parametrize("slots", [1, 3])
def test_random_dag_order_and_slot_limit(tmp_path, slots):
    rng = random.Random(7)
    dag = random_dag(rng, 50)
    lock = threading.Lock()
    in_use, peak = [0], [0]

    def build(key):
        def run(ctx):
            with lock:
                in_use[0] += ctx.jobs
                peak[0] = max(peak[0], in_use[0])
            try:
                for dep in dag[key]:  # every dependency's output is complete before a dependent starts
                    assert (tmp_path / dep).read_text() == dep
                time.sleep(rng.random() * 0.005)
                (tmp_path / key).write_text(key)
            finally:
                with lock:
                    in_use[0] -= ctx.jobs
        return run

    jobs = [Job(key, deps, build(key), estimate=1 + int(key[1:]) % 4) for key, deps in dag.items()]
    rng.shuffle(jobs)
    result = run_jobs(jobs, slots=slots)
    assert result.ok, result.failed
    assert sorted(result.succeeded) == sorted(dag)
    assert 1 <= peak[0] <= slots
    records = {r.key: r for r in result.records}
    for key, deps in dag.items():
        for dep in deps:
            assert records[dep].end <= records[key].start, (dep, key)
    for r in result.records:  # slots granted to the builds running at each start never exceed the limit
        assert sum(o.jobs for o in result.records if o.start <= r.start < o.end) <= slots
        assert 0 <= r.slot < slots


def test_lone_ready_job_gets_all_slots():
    result = run_jobs([Job("a", (), noop), Job("b", ("a",), noop)], slots=2)
    assert grants(result.records) == {"a": 2, "b": 2}


def test_ready_jobs_share_slots_and_max_jobs():
    assert grants(run_jobs([Job("a", (), noop), Job("b", (), noop)], slots=2).records) == {"a": 1, "b": 1}
    # Four slots, three ready jobs: one each, the spare one to the longest path.
    jobs = [Job("a", (), noop, estimate=1), Job("b", (), noop, estimate=5), Job("c", (), noop, estimate=2)]
    assert grants(run_jobs(jobs, slots=4).records) == {"a": 1, "b": 2, "c": 1}
    assert grants(run_jobs([Job("serial", (), noop, max_jobs=1)], slots=4).records) == {"serial": 1}
    jobs = [Job("a", (), noop, estimate=9, max_jobs=2), Job("b", (), noop, estimate=1)]
    assert grants(run_jobs(jobs, slots=6).records) == {"a": 2, "b": 4}


def test_critical_path_starts_first():
    jobs = [Job("short", (), noop, estimate=5), Job("head", (), noop, estimate=1),
            Job("middle", ("head",), noop, estimate=3), Job("tail", ("middle",), noop, estimate=3)]
    order = [r.key for r in sorted(run_jobs(jobs, slots=1).records, key=lambda r: r.start)]
    assert order == ["head", "middle", "short", "tail"]  # path lengths 7, 6, 5 (short), 3


def test_failure_stops_new_starts_but_running_jobs_finish():
    failed_seen = threading.Event()

    def fail(ctx):
        raise RuntimeError("compiler exploded")

    def running(ctx):  # still running when the failure is handled; must be let finish
        if not failed_seen.wait(WAIT):
            raise AssertionError("the failure was never reported")

    def events(event):
        if event["event"] == "failed":
            failed_seen.set()

    jobs = [Job("bad", (), fail, estimate=10), Job("runner", (), running, estimate=5),
            Job("child", ("bad",), noop), Job("grandchild", ("child",), noop),
            Job("later1", (), noop), Job("later2", ("runner",), noop)]
    result = run_jobs(jobs, slots=2, events=events)
    assert not result.ok
    assert result.succeeded == ["runner"]
    assert list(result.failed) == ["bad"] and str(result.failed["bad"]) == "compiler exploded"
    assert result.skipped == {"child": "bad", "grandchild": "bad", "later1": "bad", "later2": "bad"}
    assert result.reasons["grandchild"] == "needs bad, which failed"
    assert result.reasons["later1"] == result.reasons["later2"] == "stopped after failure of bad"
    assert {r.key for r in result.records} == {"bad", "runner"}


def test_keep_going_runs_everything_independent():
    def fail(ctx):
        raise RuntimeError("no")

    jobs = [Job("bad", (), fail, estimate=10), Job("child", ("bad",), noop), Job("grandchild", ("child", "ok2"), noop),
            Job("ok1", (), noop), Job("ok2", ("ok1",), noop), Job("ok3", ("ok2",), noop)]
    events = []
    result = run_jobs(jobs, slots=2, keep_going=True, events=events.append)
    assert sorted(result.succeeded) == ["ok1", "ok2", "ok3"]
    assert list(result.failed) == ["bad"]
    assert result.skipped == {"child": "bad", "grandchild": "bad"}
    assert not result.ok
    assert sorted(e["key"] for e in events if e["event"] == "skipped") == ["child", "grandchild"]
    assert [e["key"] for e in events if e["event"] == "failed"] == ["bad"]


def test_dependency_cycle_is_named():
    jobs = [Job("x", ("y",), noop), Job("y", ("z",), noop), Job("z", ("x",), noop), Job("w", ("x",), noop)]
    with pytest.raises(ValueError, match="cycle") as info:
        run_jobs(jobs, slots=2)
    message = str(info.value)
    assert all(k in message for k in "xyz") and "w" not in message.split(":", 1)[1]
    with pytest.raises(ValueError, match="self -> self"):
        job_graph([Job("self", ("self",), noop)])
    with pytest.raises(ValueError, match="duplicate"):
        job_graph([Job("a", (), noop), Job("a", (), noop)])


def test_dependencies_outside_the_list_count_as_done():
    result = run_jobs([Job("a", ("built-earlier",), noop)], slots=1)
    assert result.succeeded == ["a"] and result.deps == {"a": ()}


def test_memory_budget_keeps_big_builds_apart():
    jobs = [Job("big1", (), noop, memory=60), Job("big2", (), noop, memory=60), Job("small", (), noop, memory=10)]
    result = run_jobs(jobs, slots=3, memory=100)
    records = {r.key: r for r in result.records}
    assert result.ok
    first, second = sorted((records["big1"], records["big2"]), key=lambda r: r.start)
    assert first.end <= second.start
    # Bigger than the whole budget: runs anyway, alone.
    result = run_jobs([Job("huge", (), noop, memory=500), Job("other", (), noop, memory=1)], slots=2, memory=100)
    a, b = sorted(result.records, key=lambda r: r.start)
    assert result.ok and a.end <= b.start


def test_output_events_carry_the_latest_line():
    def chatty(ctx):
        for i in range(200):
            ctx.output(f"line {i}")

    events = []
    run_jobs([Job("a", (), chatty, label="A 1.0")], slots=1, events=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"output"}
    assert events[-2]["line"] == "line 199"
    assert all(e["label"] == "A 1.0" and e["key"] == "a" for e in events)
    assert events[0]["jobs"] == 1 and events[0]["slot"] == 0


def test_interrupt_cancels_running_jobs_then_propagates():
    saw_cancel, returned = threading.Event(), threading.Event()

    def long_build(ctx):
        if ctx.cancelled.wait(WAIT):
            saw_cancel.set()
        returned.set()

    def events(event):
        if event["event"] == "start" and event["key"] == "b":
            raise KeyboardInterrupt

    both = threading.Barrier(2, timeout=WAIT)
    jobs = [Job("a", (), lambda c: (both.wait(), long_build(c))), Job("b", (), lambda c: both.wait())]
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, slots=2, events=events)
    assert saw_cancel.is_set() and returned.is_set()


def test_job_writing_files_runs_in_threads(tmp_path):
    main = threading.get_ident()

    def build(ctx):
        assert threading.get_ident() != main
        (tmp_path / ctx.key).write_text(str(ctx.jobs))

    result = run_jobs([Job(k, (), build) for k in "abc"], slots=2)
    assert result.ok and sorted(os.listdir(tmp_path)) == ["a", "b", "c"]
