"""Scale benchmark (issue 13): 10,000 packages beside 1,000, for admins and for users.

Admins: a no-op ``sitedist sync`` (all present) and a ``--dry-run`` with an empty store (all missing), at
1,000 and 10,000 packages of bench_sync's generated stack; whole process, wall time (median of 5), CPU
time (user + system, median) and peak RSS (of the process, from ``wait4``), and the growth from 1,000 to
10,000; the load average is reported beside them. Both after one run that
warms the user's caches (the plan cache, the documents cache, the probe), as every sync after the first.

Users: a 10,000-module tree (bench_modules' synthetic entries: 2,500 packages of 4 versions, Lua and Tcl)
published with ``modules.lmod_cache``; then real Lmod's ``module avail``, ``module spider NAME`` and
``module load NAME``, with the spider cache sitedist wrote (``LMOD_RC`` naming it) and without, and
Environment Modules 5's ``module avail`` and ``module load NAME`` on the Tcl tree. Each command is a new
``bash`` that sources the tool's init script (its start-up is measured alone too: ``init only``), with
``HOME`` set to an empty directory so no user cache counts; median of 3.

The 10,000-package store is built once (about 20 minutes on 2 CPUs) in
``$TMPDIR/sitedist-bench-sync-g1-s1-n10000``; the module tree is kept in ``$TMPDIR/sitedist-bench-scale``.

    python bench/bench_scale.py [--runs N] [--no-users]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench_sync
from timing import sitedist_command

NOOP_TARGET = 1.0
DRY_RUN_TARGET = 1.0
RSS_TARGET_MB = 300
AVAIL_TARGET = 0.5
LMOD_INIT = "/usr/share/lmod/lmod/init/bash"
EM5_INIT = "/opt/em5/usr/share/modules/init/bash"


def run_measured(argv, env=None):
    """(wall seconds, peak RSS in MB, CPU seconds) of one run of ``argv``; RuntimeError if it fails."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{err}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def measure(argv, runs, env=None):
    """Median wall seconds, peak RSS (MB), median CPU seconds (user + system: what the work costs when
    other processes share the CPUs)."""
    results = [run_measured(argv, env) for _ in range(runs)]
    return (statistics.median(r[0] for r in results), max(r[1] for r in results),
            statistics.median(r[2] for r in results))


def admin_figures(n, runs):
    root = bench_sync.bench_root(1, n)
    bench_sync.generate(root, 1, n)
    bench_sync.build_once(root)
    site, empty = os.path.join(root, "site.yml"), os.path.join(root, "empty.yml")
    sync, dry = sitedist_command() + ["sync", site], sitedist_command() + ["sync", "--dry-run", empty]
    run_measured(sync)   # warm: a first sync records what the no-op fast path checks
    run_measured(dry)
    noop_s, noop_mb, noop_cpu = measure(sync, runs)
    dry_s, dry_mb, dry_cpu = measure(dry, runs)
    return {"noop_s": round(noop_s, 3), "noop_rss_mb": round(noop_mb, 1), "noop_cpu_s": round(noop_cpu, 3),
            "dry_run_s": round(dry_s, 3), "dry_run_rss_mb": round(dry_mb, 1), "dry_run_cpu_s": round(dry_cpu, 3),
            "load_average": round(os.getloadavg()[0], 1)}


def publish_tree(directory, n=10_000):
    """A published n-module tree with an Lmod spider cache, kept in ``directory``; returns its root."""
    from bench_modules import synthetic_entries

    from sitedist.modules import publish

    root, cache = os.path.join(directory, "modules"), os.path.join(directory, "lmod-cache")
    if not os.path.islink(os.path.join(root, "current")):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        publish(synthetic_entries(n), {"root": root, "formats": ["lua", "tcl"], "layout": "flat",
                                       "disambiguate": ["toolchain"], "keep": 2, "lmod_cache": cache})
    with open(os.path.join(directory, "lmodrc.lua"), "w") as f:
        f.write(f'scDescriptT = {{ {{ ["dir"] = "{cache}", ["timestamp"] = "{cache}/timestamp" }} }}\n')
    return root


def shell_times(init, setup, commands, runs, env):
    """{label: median seconds} of ``bash -c 'source INIT; SETUP; COMMAND'`` per command."""
    out = {}
    for label, command in [("init only", "true")] + commands:
        script = f"source {init} >/dev/null 2>&1; {setup}; {command} >/dev/null 2>&1"
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            subprocess.run(["bash", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - began)
        out[label] = round(statistics.median(times), 3)
    return out


def user_figures(runs):
    directory = os.path.join(tempfile.gettempdir(), "sitedist-bench-scale")
    root = publish_tree(directory)
    home = tempfile.mkdtemp(prefix="bench-scale-home-")
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C"}
        name = "pkg01234"
        lmod = [("avail", "module avail"), ("spider", f"module spider {name}"), ("load", f"module load {name}")]
        figures = {}
        if os.path.isfile(LMOD_INIT):
            cached = shell_times(LMOD_INIT, f"export LMOD_RC={directory}/lmodrc.lua; module use {root}/lmod",
                                 lmod, runs, env)
            plain = shell_times(LMOD_INIT, f"module use {root}/lmod", lmod, runs, env)
            figures.update({f"lmod_{k.replace(' ', '_')}_cache_s": v for k, v in cached.items()})
            figures.update({f"lmod_{k.replace(' ', '_')}_no_cache_s": v for k, v in plain.items()})
        if os.path.isfile(EM5_INIT):
            em5 = shell_times(EM5_INIT, f"module use {root}/tcl",
                              [("avail", "module avail"), ("avail name", f"module avail {name}"),
                               ("load", f"module load {name}")], runs, env)
            figures.update({f"em5_{k.replace(' ', '_')}_s": v for k, v in em5.items()})
        return figures
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(runs=5, users=True):
    small, big = admin_figures(1000, runs), admin_figures(10_000, runs)
    figures = {f"{k}_1k": v for k, v in small.items()}
    figures.update({f"{k}_10k": v for k, v in big.items()})
    for k in small:
        if k != "load_average":
            figures[f"{k}_growth"] = round(big[k] / small[k], 2) if small[k] else None
    figures.update({"noop_target_s": NOOP_TARGET, "dry_run_target_s": DRY_RUN_TARGET, "rss_target_mb": RSS_TARGET_MB,
                    "avail_target_s": AVAIL_TARGET})
    if users:
        figures.update(user_figures(max(1, min(runs, 3))))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-users", action="store_true", help="skip the module tools' figures")
    args = parser.parse_args()
    for key, value in main(args.runs, not args.no_users).items():
        print(f"{key:>28}: {value}")
    sys.exit(0)
