"""Scheduler benchmark: 200 sleep builds in a random DAG (seeded) on 2 slots.

Prints makespan / lower bound, where lower bound = max(critical path, total work / slots). Target: at most
1.05. Sleep builds use one CPU whatever their make -j, so they declare ``max_jobs=1``; each job's
estimate is its known duration. ``main()`` returns the figures for ``bench/run_all.py``.

    python bench/bench_scheduler.py [--seed N] [--jobs N] [--slots N] [--work SECONDS]
"""

import argparse
import random
import time

from sitedist.build.scheduler import Job, job_graph, run_jobs

TARGET = 1.05


def random_dag(seed, n, work):
    """n jobs; each depends on up to 3 of the 25 jobs before it; durations sum to ``work`` seconds."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0, 0.8) for _ in range(n)]
    durations = [work * r / sum(raw) for r in raw]
    deps = [tuple(f"p{j}" for j in rng.sample(range(max(0, i - 25), i), min(i, rng.randint(0, 3))))
            for i in range(n)]
    return {f"p{i}": (deps[i], durations[i]) for i in range(n)}


def sleeper(seconds):
    return lambda ctx: time.sleep(seconds)


def main(seed=1, jobs=200, slots=2, work=26.0):
    dag = random_dag(seed, jobs, work)
    job_list = [Job(key, deps, sleeper(d), label=key, estimate=d, max_jobs=1) for key, (deps, d) in dag.items()]
    critical = max(job_graph(job_list)[3].values())
    lower_bound = max(critical, work / slots)
    began = time.monotonic()
    result = run_jobs(job_list, slots=slots)
    makespan = time.monotonic() - began
    assert result.ok, result.failed
    return {"jobs": jobs, "slots": slots, "seed": seed, "total_work_s": round(work, 3),
            "critical_path_s": round(critical, 3), "lower_bound_s": round(lower_bound, 3),
            "makespan_s": round(makespan, 3), "ratio": round(makespan / lower_bound, 4), "target": TARGET,
            "met": makespan / lower_bound <= TARGET}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--work", type=float, default=26.0, help="total seconds of sleep over all jobs")
    args = parser.parse_args()
    figures = main(args.seed, args.jobs, args.slots, args.work)
    for name, value in figures.items():
        print(f"{name:>16}: {value}")
    print(f"makespan / lower bound = {figures['ratio']:.3f} (target <= {TARGET})")
