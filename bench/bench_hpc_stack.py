"""HPC stack benchmark: `sitedist sync site_configs/hpc/site.yml -j 2` from an empty store (real sources,
the host's gcc, Open MPI and MPICH), and the scheduler's makespan against its lower bound on that DAG.

The figures come from the sync's build report (``sitedist report --json``): per build its start, end and
CPU slots (``jobs``). Lower bound = max(critical path, slot-seconds of all builds / slots), where a build's
slot-seconds are its duration times the slots it held; target: makespan within 1.10 of it. The wall time
of the whole sync (probe, fetching from the mirror, building, publishing modules and the profile) is
reported beside it, and bench/README.md keeps the per-package times this prints.

    python bench/bench_hpc_stack.py [--jobs N] [--store DIR] [--report REPORT.json]

It takes tens of minutes on 2 cores (it builds everything); ``--report`` reads the figures from the report
of a sync made before (e.g. by the hpc tests: <store>/../reports/latest.json is printed by
`sitedist report CONFIG --json`) instead of building. ``main()`` returns the figures for bench/run_all.py.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPC = os.path.join(REPO, "site_configs", "hpc", "site.yml")
TARGET = 1.10


def cli(*args):
    return subprocess.run([sys.executable, "-m", "sitedist.cli.main", *map(str, args)], cwd=REPO, check=True,
                          capture_output=True, text=True)


def sync_fresh(jobs, store):
    """Sync the hpc config into ``store`` (which should be empty); returns (wall seconds, report)."""
    work = tempfile.mkdtemp(prefix="bench-hpc-")
    config = os.path.join(work, "site.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f"extends: [{HPC}]\nstore: {store}\nmirrors: [{os.path.join(REPO, 'sources')}]\n"
                f"modules: {{root: {work}/modules}}\n"
                f"profiles: {{python: {{packages: [py-numpy], root: {work}/profile}}}}\n")
    began = time.monotonic()
    cli("sync", "-j", jobs, "--progress", "quiet", config)
    wall = time.monotonic() - began
    return wall, json.loads(cli("report", "--json", config).stdout)


def figures(report, slots):
    built = [p for p in report["packages"] if p.get("state") == "done" or "duration" in p]
    durations = {p["key"]: p["duration"] for p in built}
    critical = report["summary"]["critical_path_time"]
    work = sum(p["duration"] * (p.get("jobs") or 1) for p in built)
    lower = max(critical, work / slots)
    makespan = report["summary"]["build_span"]
    per_package = sorted(((p["label"], round(p["duration"], 1), p.get("jobs")) for p in built),
                         key=lambda row: -row[1])
    return {"builds": len(durations), "slots": slots, "makespan_s": round(makespan, 1),
            "critical_path_s": round(critical, 1), "slot_seconds": round(work, 1), "lower_bound_s": round(lower, 1),
            "ratio": round(makespan / lower, 3) if lower else None, "target": TARGET,
            "critical_path": [next(p["label"] for p in built if p["key"] == k) for k in report["critical_path"]],
            "per_package": per_package}


def main(jobs=2, store=None, report_path=None):
    if report_path:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        wall = None
    else:
        store = store or tempfile.mkdtemp(prefix="bench-hpc-store-")
        wall, report = sync_fresh(jobs, store)
    out = figures(report, int(report["meta"].get("slots") or jobs))
    out["sync_wall_s"] = round(wall, 1) if wall is not None else None
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--store", help="an empty directory for the store (default: a new one under $TMPDIR)")
    parser.add_argument("--report", help="a build report (JSON) of a sync made before: no build")
    args = parser.parse_args()
    result = main(args.jobs, args.store, args.report)
    for row in result.pop("per_package"):
        print(f"{row[0]:>40}: {row[1]:8.1f} s  ({row[2]} slots)")
    for name, value in result.items():
        print(f"{name:>16}: {value}")
    print(f"makespan / lower bound = {result['ratio']} (target <= {TARGET})")
