"""Lock benchmark (issue 14): ``sitedist lock`` and a no-op ``sitedist sync --locked`` over the 1,000
generated packages of bench_sync (all present), and going back to a recorded sync of 100 of them with
``sitedist sync --from-history`` (a module tree of 100 packages published again, nothing built). Whole
process, wall time, median of 5.

Targets: lock under 0.5 s, sync --locked (no-op) under 0.5 s, back to a recorded sync of 100 packages
under 1 s.

Uses bench_sync's generated recipes and store (built there the first time, minutes); the history config
``history.yml`` is written beside them, with its module tree in ``history-modules/``.

    python bench/bench_lock.py [--seed N] [--packages N] [--runs N]
"""

import argparse
import os
import subprocess

from bench_sync import bench_root, build_once, generate
from timing import median_wall, sitedist_command

LOCK_TARGET = 0.5
LOCKED_TARGET = 0.5
RESTORE_TARGET = 1.0
RESTORE_PACKAGES = 100


def _history_config(root, packages):
    with open(os.path.join(root, "history.yml"), "w") as f:
        f.write("store: store\nrecipes: [recipes]\nmirrors: [mirror]\nmodules: {root: history-modules}\npackages:\n"
                + "".join(f"  p{i}: {{}}\n" for i in range(packages)))
    return os.path.join(root, "history.yml")


def _run(argv):
    proc = subprocess.run(sitedist_command() + argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sitedist {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def main(seed=1, packages=1000, runs=5):
    root = bench_root(seed, packages)
    generate(root, seed, packages)
    build_once(root)
    site = os.path.join(root, "site.yml")
    lock_file = os.path.join(root, "bench.lock")
    lock_s = median_wall(sitedist_command() + ["lock", site, "--output", lock_file], runs)
    locked_s = median_wall(sitedist_command() + ["sync", site, "--locked", lock_file], runs)

    # Two recorded syncs of one config (100 packages, then 50 of them), then back to the first.
    config = _history_config(root, RESTORE_PACKAGES)
    _run(["sync", config])
    first = _run(["history", config, "--json"])
    _history_config(root, RESTORE_PACKAGES // 2)
    _run(["sync", config])
    import json

    number = json.loads(first)[-1]["n"]
    restore_s = median_wall(sitedist_command() + ["sync", config, "--from-history", str(number)], runs)
    _history_config(root, RESTORE_PACKAGES)
    return {"packages": packages, "seed": seed, "runs": runs, "bench_dir": root,
            "lock_s": round(lock_s, 3), "lock_target_s": LOCK_TARGET,
            "locked_sync_s": round(locked_s, 3), "locked_target_s": LOCKED_TARGET,
            "restore_packages": RESTORE_PACKAGES,
            "restore_s": round(restore_s, 3), "restore_target_s": RESTORE_TARGET,
            "lock_bytes": os.path.getsize(lock_file)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures = main(args.seed, args.packages, args.runs)
    for name, value in figures.items():
        print(f"{name:>18}: {value}")
    print(f"lock {figures['lock_s']:.3f} s (target < {LOCK_TARGET}), sync --locked {figures['locked_sync_s']:.3f} s "
          f"(target < {LOCKED_TARGET}), back to a recorded sync of {RESTORE_PACKAGES} packages "
          f"{figures['restore_s']:.3f} s (target < {RESTORE_TARGET})")
