"""Slurm executor benchmark (issue 16), against the cluster .ci/slurm-up.sh starts (or any that answers).

1. Overhead: ``sitedist sync --executor slurm`` of N trivial artifacts with no dependencies between them
   (each build makes one empty file): the CPU time of the submitting sync and of the Slurm client
   commands it runs (sbatch, squeue), per job. Target: under 0.2 s per job. This counts everything the
   submitting process does (config, plan, source prefetch, submission, watching, report, modules), so
   it is an upper bound of the submission and watching overhead.
2. Makespan: a seeded random DAG of N packages (each link-depends on up to 2 of the 10 before it), each
   build ``sleep 1``, through Slurm (``cpus_per_build: 1``) against the same DAG built locally with
   ``-j`` equal to the node's CPUs; wall time of the whole sync, fresh store each.

Skips (returns ``skipped``) when no Slurm controller answers ``sinfo``.

    python bench/bench_slurm.py [--packages N] [--seed N]
"""

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from timing import sitedist_command

OVERHEAD_TARGET = 0.2


def slurm_answers():
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def node_cpus():
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else 1


def generate(root, n, seed, sleep, deps):
    """Recipes ``p000``..; a config ``site.yml`` (store ``store``, modules ``modules``) listing them all."""
    rng = random.Random(seed)
    recipes = os.path.join(root, "recipes")
    os.makedirs(os.path.join(recipes, "src"))
    with open(os.path.join(recipes, "src", "README"), "w") as f:
        f.write("synthetic\n")
    names = [f"p{i:03d}" for i in range(n)]
    for i, name in enumerate(names):
        lines = [f"name: {name}", "versions:", '  "1.0": {path: src}']
        if deps and i:
            chosen = sorted(set(rng.sample(names[max(0, i - 10):i], min(i, rng.randint(0, 2)))))
            if chosen:
                lines += ["depends:", f"  link: [{', '.join(chosen)}]"]
        lines += ["build: commands", "commands:"]
        if sleep:
            lines.append(f"  - sleep {sleep}")
        lines.append(f'  - mkdir -p "$PREFIX/share" && touch "$PREFIX/share/{name}"')
        with open(os.path.join(recipes, f"{name}.yml"), "w") as f:
            f.write("\n".join(lines) + "\n")
    config = os.path.join(root, "site.yml")
    with open(config, "w") as f:
        f.write(f"store: {root}/store\nrecipes: [{recipes}]\nmodules: {{root: {root}/modules}}\n"
                "executor: {type: slurm, cpus_per_build: 1, poll: 0.5}\npackages:\n"
                + "".join(f"  {name}: {{}}\n" for name in names))
    return config


def timed_sync(config, *args):
    """(wall seconds, CPU seconds of the sync and its child processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(sitedist_command() + ["sync", "--progress", "quiet", *args, config],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"sync {' '.join(args)} {config} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fresh(root):
    for sub in ("store", "modules"):
        shutil.rmtree(os.path.join(root, sub), ignore_errors=True)


def main(argv=()):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(list(argv))
    if not slurm_answers():
        print("bench_slurm: no Slurm controller answers 'sinfo' (bash .ci/slurm-up.sh starts one); skipped")
        return {"skipped": True}
    n, cpus = args.packages, node_cpus()
    with tempfile.TemporaryDirectory(prefix="sitedist-bench-slurm-") as tmp:
        flat = generate(os.path.join(tmp, "flat"), n, args.seed, sleep=0, deps=False)
        wall, cpu = timed_sync(flat, "--executor", "slurm")
        jobs = n + 1  # and the host compiler's artifact
        per_job = cpu / jobs
        print(f"overhead: {jobs} jobs through Slurm in {wall:.1f} s; the submitting sync used {cpu:.2f} CPU s "
              f"= {per_job:.3f} s per job (target < {OVERHEAD_TARGET})")

        dag = generate(os.path.join(tmp, "dag"), n, args.seed, sleep=1, deps=True)
        slurm_wall, _ = timed_sync(dag, "--executor", "slurm")
        fresh(os.path.dirname(dag))
        local_wall, _ = timed_sync(dag, "--executor", "local", "-j", str(cpus))
        print(f"makespan of a {n}-package DAG (sleep 1 each): Slurm {slurm_wall:.1f} s, local -j{cpus} "
              f"{local_wall:.1f} s (ratio {slurm_wall / local_wall:.2f})")
    return {"skipped": False, "jobs": jobs, "wall_s": round(wall, 1), "cpu_per_job_s": round(per_job, 4),
            "target_s": OVERHEAD_TARGET, "makespan_slurm_s": round(slurm_wall, 1),
            "makespan_local_s": round(local_wall, 1), "makespan_ratio": round(slurm_wall / local_wall, 2)}


if __name__ == "__main__":
    main(sys.argv[1:])
