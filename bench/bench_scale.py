"""Scale benchmark (issue 13): 10,000 packages beside 1,000, for admins and for users.

Admins: a no-op ``sitedist sync`` (all present) and a ``--dry-run`` with an empty store (all missing), at
1,000 and 10,000 packages of bench_sync's generated stack; whole process, wall time (median of 5), CPU
time (user + system, median) and peak RSS (of the process, from ``wait4``), and the growth from 1,000 to
10,000; the load average is reported beside them. Both after one run that
warms the user's caches (the plan cache, the documents cache, the probe), as every sync after the first.

Users: 1,000- and 10,000-module trees (bench_modules' synthetic entries: packages of 4 versions, Lua and
Tcl, a third of them hidden dependencies) published with ``modules.lmod_cache``; then real Lmod's
``module avail``, ``module spider NAME`` and ``module load NAME`` with the spider cache sitedist wrote
(``LMOD_RC`` naming the ``lmodrc.lua`` beside it), with the cache and ``LMOD_CACHED_LOADS=yes``, and
without a cache, and Environment Modules 5's ``module avail [NAME]`` and ``module load NAME`` on the Tcl
tree. Each command is a new ``bash`` that sources the tool's init script (its start-up is measured alone
too: ``init only``), with a new empty ``HOME`` every run so no user cache of Lmod's counts; median of 3 of
the wall time and of the CPU time of the whole process tree (user + system, from ``wait4``). Each output
is checked (avail lists the tree, spider finds the name, the load loaded), and avail's and spider's are
the same with and without the cache. Also: the size of the cache and the CPU time of refreshing it (the
full refresh, and the refresh after one change that re-runs Lmod on the changed name only); and
Lmod's ``module avail`` on trees of the same sizes in the hierarchical layout (4 compilers, an MPI each),
with nothing loaded and with a compiler and its MPI loaded.

The 10,000-package store is built once (about 20 minutes on 2 CPUs) in
``$TMPDIR/sitedist-bench-sync-g1-s1-n10000``; the module trees are kept in ``$TMPDIR/sitedist-bench-scale-N``.

    python bench/bench_scale.py [--runs N] [--no-users | --users-only]
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout's sitedist
import bench_sync  # noqa: E402
from timing import sitedist_command  # noqa: E402

NOOP_TARGET = 1.0
DRY_RUN_TARGET = 1.0
RSS_TARGET_MB = 300
AVAIL_TARGET = 0.5
ONE_CHANGE_PUBLISH_TARGET = 0.3
LMOD_INIT = "/usr/share/lmod/lmod/init/bash"
EM5_INIT = "/opt/em5/usr/share/modules/init/bash"


# Runs the command from a small process and reports its rusage: a process's peak RSS (ru_maxrss) counts
# the memory of the image it was exec'd from, so a command started straight from this (larger) process
# would report this process's size when its own is smaller (88 MB for a 46 MB no-op sync).
_LAUNCH = """import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, u = os.wait4(pid, 0)
print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime, os.waitstatus_to_exitcode(status))
"""


def run_measured(argv, env=None):
    """(wall seconds, peak RSS in MB, CPU seconds) of one run of ``argv``; RuntimeError if it fails."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCH, *argv], capture_output=True, text=True, env=env)
    try:
        wall, rss_kb, cpu, code = proc.stdout.split()
    except ValueError:
        raise RuntimeError(f"measuring {' '.join(argv)} failed:\n{proc.stderr}") from None
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}:\n{proc.stderr}")
    return float(wall), int(rss_kb) / 1024, float(cpu)


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


COMPILERS = (("gcc", "12.2.0"), ("gcc", "13.1.0"), ("llvm", "16.0.6"), ("intel", "2023.1.0"))
MPI = ("openmpi", "4.1.5")


def hierarchical_entries(n, store="/nonexistent/store"):
    """n entries for Lmod's Core / Compiler / MPI layout: 4 compilers and an MPI built with each; packages
    of 4 versions (a third of the modules hidden dependencies, as in the flat tree), one name in ten in
    Core, the others built with one of the compilers, every other one with its MPI too."""
    from bench_modules import SUBDIRS

    from sitedist.modules import ModuleEntry

    def entry(name, version, i, **kw):
        aid = hashlib.sha256(f"h{i}".encode()).hexdigest()[:32]
        return ModuleEntry(name=name, version=version, prefix=f"{store}/{name}/{version}-{aid}", artifact_id=aid,
                           description=f"Synthetic package {i}", homepage="https://example.org", subdirs=SUBDIRS,
                           **kw)

    entries = [entry(c, v, -1 - k, kind="compiler") for k, (c, v) in enumerate(COMPILERS)]
    entries += [entry(MPI[0], MPI[1], -10 - k, kind="mpi", compiler=c) for k, c in enumerate(COMPILERS)]
    for i in range(n - len(entries)):
        p = i // 4
        where = {} if p % 10 == 0 else {"compiler": COMPILERS[p % 4], **({"mpi": MPI} if p % 2 else {})}
        entries.append(entry(f"pkg{p:05d}", f"{1 + i % 2}.{i % 4}.0", i, explicit=i % 3 != 0, **where))
    return entries


def publish_tree(n, layout="flat"):
    """A published n-module tree (Lua and Tcl) with sitedist's Lmod spider cache, kept in
    ``$TMPDIR/sitedist-bench-scale-N[-hierarchical]``; returns (directory, Lmod's MODULEPATH entry, Tcl's,
    cache directory)."""
    from bench_modules import synthetic_entries

    from sitedist.modules import modulepath_roots, publish
    from sitedist.modules.lmod_cache import LMODRC

    suffix = "" if layout == "flat" else f"-{layout}"
    directory = os.path.join(tempfile.gettempdir(), f"sitedist-bench-scale-{n}{suffix}")
    root, cache = os.path.join(directory, "modules"), os.path.join(directory, "lmod-cache")
    config = {"root": root, "formats": ["lua", "tcl"], "layout": layout, "disambiguate": ["toolchain"], "keep": 2,
              "lmod_cache": cache}
    if not (os.path.islink(os.path.join(root, "current")) and os.path.isfile(os.path.join(cache, LMODRC))):
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        publish(synthetic_entries(n) if layout == "flat" else hierarchical_entries(n), config)
    paths = modulepath_roots(config)
    return directory, paths["lua"], paths["tcl"], cache


def refresh_cpu(lua_path, cache):
    """CPU seconds of refreshing the spider cache of the tree (what modules.lmod_cache adds to a publish)."""
    from sitedist.modules.lmod_cache import refresh_lmod_cache

    before = os.times()
    refresh_lmod_cache(cache, {"lua": lua_path})
    after = os.times()
    return round(after.children_user + after.children_system - before.children_user - before.children_system, 3)


def refresh_figures(n, changes=3, layout="flat"):
    """Lmod's spider cache of an n-module tree (Lua; ``layout`` flat or hierarchical, whose figures are named
    ``lmod_cache_hierarchical_*``): the full refresh (update_lmod_system_cache_files,
    then sitedist indexes its output), then after each of ``changes`` one-package changes the refresh that
    re-runs Lmod on the changed name only and splices its text in; then ``changes`` one-package publishes
    with ``modules.lmod_cache`` set, the refresh included; wall and CPU (this process and its children),
    median. The last spliced cache is compared with a full refresh of the same tree."""
    from bench_modules import synthetic_entries

    from sitedist.modules import ModuleEntry, publish
    from sitedist.modules.lmod_cache import CacheRefresh, refresh_lmod_cache

    def timed(call):
        t, before = time.perf_counter(), os.times()
        out = call()
        after = os.times()
        cpu = sum(after[:4]) - sum(before[:4])
        return out, time.perf_counter() - t, cpu

    def names(result):
        with open(os.path.join(result.path, "names.json")) as f:
            return json.load(f)

    directory = tempfile.mkdtemp(prefix="bench-lmod-refresh-")
    try:
        root, cache = os.path.join(directory, "modules"), os.path.join(directory, "cache")
        config = {"root": root, "formats": ["lua"], "layout": layout, "disambiguate": ["toolchain"], "keep": 2}
        entries = synthetic_entries(n) if layout == "flat" else hierarchical_entries(n)
        result = publish(entries, config)
        full, t_full, c_full = timed(lambda: refresh_lmod_cache(cache, result.modulepath, names(result)))
        splices = []
        for k in range(changes):
            i = n // 2 + 4 * k
            e = entries[i]
            entries[i] = ModuleEntry(**{**e.__dict__, "artifact_id": f"{k}" * 32, "prefix": e.prefix + "-rebuilt"})
            result = publish(entries, config)
            splices.append(timed(lambda: refresh_lmod_cache(cache, result.modulepath, names(result))))
        publishes = []   # the same, as a site publishes: the refresh inside the publish
        for k in range(changes, 2 * changes):
            i = n // 2 + 4 * k
            e = entries[i]
            entries[i] = ModuleEntry(**{**e.__dict__, "artifact_id": f"{k}" * 32, "prefix": e.prefix + "-rebuilt"})
            publishes.append(timed(lambda: publish(entries, {**config, "lmod_cache": cache})))
            result = publishes[-1][0]
            splices.append((CacheRefresh(**result.lmod_cache), 0, 0))
        whole = os.path.join(directory, "whole")
        refresh_lmod_cache(whole, result.modulepath)   # Lmod over the whole tree, for the comparison
        with open(os.path.join(cache, "spiderT.lua"), "rb") as a, open(os.path.join(whole, "spiderT.lua"), "rb") as b:
            identical = a.read() == b.read()
    finally:
        shutil.rmtree(directory)
    if full.spliced or not all(r.spliced and len(r.spidered) == 1 for r, _, _ in splices):
        raise RuntimeError(f"the refreshes were not as expected: {full}, {[r for r, _, _ in splices]}")
    figures = {"full_refresh_s": round(t_full, 3), "full_refresh_cpu_s": round(c_full, 3),
               "splice_s": round(statistics.median(t for _, t, _ in splices[:changes]), 3),
               "splice_cpu_s": round(statistics.median(c for _, _, c in splices[:changes]), 3),
               "one_change_publish_s": round(statistics.median(t for _, t, _ in publishes), 3),
               "one_change_publish_cpu_s": round(statistics.median(c for _, _, c in publishes), 3),
               "splice_identical": identical}
    prefix = "lmod_cache_" if layout == "flat" else f"lmod_cache_{layout}_"
    return {prefix + key: value for key, value in figures.items()}


def shell_run(init, setup, command, env):
    """(wall, CPU seconds of the whole process tree, output) of ``bash -c 'source INIT; SETUP; COMMAND'``,
    with a new empty HOME (no user cache of Lmod's counts)."""
    home = tempfile.mkdtemp(prefix="bench-scale-home-")
    try:
        script = f"source {init} >/dev/null 2>&1; {setup}; {command}"
        began = time.perf_counter()
        proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-c", script], env={**env, "HOME": home},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.stdout.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{script} exited {os.waitstatus_to_exitcode(status)}:\n{out[-2000:]}")
        return wall, usage.ru_utime + usage.ru_stime, out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def shell_times(init, setup, commands, runs, env):
    """{label: (median wall, median CPU, output)} per (label, command, text its output must hold)."""
    out = {}
    for label, command, expected in [("init only", "true", "")] + commands:
        results = [shell_run(init, setup, command, env) for _ in range(runs)]
        text = results[-1][2]
        if expected not in text:
            raise RuntimeError(f"{command} ({setup}): {expected!r} not in its output:\n{text[-2000:]}")
        out[label] = (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results), text)
    return out


def user_figures(n, runs):
    """Lmod with sitedist's spider cache, with the cache and LMOD_CACHED_LOADS=yes, and without a cache;
    Environment Modules 5 on the Tcl tree; wall and CPU seconds of each command."""
    directory, lua_path, tcl_path, cache = publish_tree(n)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "TERM": "dumb"}
    name = f"pkg{n // 8:05d}"   # a package of 4 versions in the middle of the tree
    loaded = f'module load {name} 2>&1 && [ -n "$LOADEDMODULES" ] && echo LOADED'
    lmod = [("avail", "module avail 2>&1", "pkg00000/"), ("spider", f"module spider {name} 2>&1", f"{name}/"),
            ("load", loaded, "LOADED")]
    figures = {"load_average_users": round(os.getloadavg()[0], 1)}

    def record(prefix, times):
        for label, (wall, cpu, _) in times.items():
            key = label.replace(" ", "_")
            figures[f"{prefix}_{key}_s"] = round(wall, 3)
            figures[f"{prefix}_{key}_cpu_s"] = round(cpu, 3)

    if os.path.isfile(LMOD_INIT):
        rc = os.path.join(cache, "lmodrc.lua")
        use = f"module use {lua_path}"
        cached = shell_times(LMOD_INIT, f"export LMOD_RC={rc}; {use}", lmod, runs, env)
        loads = shell_times(LMOD_INIT, f"export LMOD_RC={rc} LMOD_CACHED_LOADS=yes; {use}", lmod, runs, env)
        plain = shell_times(LMOD_INIT, use, lmod, runs, env)
        for label in ("avail", "spider"):   # the cache changes how fast, not what users see
            if not cached[label][2] == loads[label][2] == plain[label][2]:
                raise RuntimeError(f"module {label} differs with and without the spider cache")
        for prefix, times in (("lmod_cache", cached), ("lmod_cached_loads", loads), ("lmod_no_cache", plain)):
            record(prefix, times)
        figures["lmod_cache_mb"] = round(os.path.getsize(os.path.join(cache, "spiderT.lua")) / 1e6, 1)
        figures["lmod_cache_refresh_cpu_s"] = refresh_cpu(lua_path, cache)
    if os.path.isfile(EM5_INIT):
        em5 = shell_times(EM5_INIT, f"module use {tcl_path}",
                          [("avail", "module avail 2>&1", "pkg00000/"),
                           ("avail name", f"module avail {name} 2>&1", f"{name}/"),
                           ("load", loaded, "LOADED")], runs, env)
        record("em5", em5)
    return figures


def hierarchical_figures(n, runs):
    """Lmod's ``module avail`` on an n-module Core / Compiler / MPI tree, with sitedist's spider cache and
    without: with nothing loaded (the Core level) and with a compiler and its MPI loaded (three levels);
    ``*_loads_*`` is the start-up and the loads alone, to subtract."""
    from sitedist.modules.lmod_cache import LMODRC

    _, lua_path, _, cache = publish_tree(n, "hierarchical")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "TERM": "dumb"}
    loads = f"module load {COMPILERS[0][0]}/{COMPILERS[0][1]} {MPI[0]}/{MPI[1]}"
    avail = [("avail", "module avail 2>&1", "pkg00000/")]
    figures = {}
    for variant, rc in (("cache", f"export LMOD_RC={os.path.join(cache, LMODRC)}; "), ("no_cache", "")):
        core = shell_times(LMOD_INIT, f"{rc}module use {lua_path}", avail, runs, env)
        deep = shell_times(LMOD_INIT, f"{rc}module use {lua_path}; {loads}", avail, runs, env)
        figures[f"lmod_hier_core_avail_{variant}_s"] = round(core["avail"][0], 3)
        figures[f"lmod_hier_core_avail_{variant}_cpu_s"] = round(core["avail"][1], 3)
        figures[f"lmod_hier_mpi_avail_{variant}_s"] = round(deep["avail"][0], 3)
        figures[f"lmod_hier_mpi_avail_{variant}_cpu_s"] = round(deep["avail"][1], 3)
        figures[f"lmod_hier_mpi_loads_{variant}_cpu_s"] = round(deep["init only"][1], 3)
        figures["lmod_hier_core_listed"] = len(re.findall(r"\bpkg\d+/", core["avail"][2]))
        figures["lmod_hier_mpi_listed"] = len(re.findall(r"\bpkg\d+/", deep["avail"][2]))
    return figures


def all_user_figures(runs):
    """user_figures at 1,000 and 10,000 modules, keys ending in _1k and _10k, and the growth of each."""
    small, big = user_figures(1000, runs), user_figures(10_000, runs)
    if os.path.isfile(LMOD_INIT):
        small.update(hierarchical_figures(1000, runs))
        big.update(hierarchical_figures(10_000, runs))
    figures = {f"{k}_1k": v for k, v in small.items()}
    figures.update({f"{k}_10k": v for k, v in big.items()})
    for k in small:
        if not k.startswith("load_average") and small[k]:
            figures[f"{k}_growth"] = round(big[k] / small[k], 1)
    return figures


def main(runs=5, users=True, admins=True):
    figures = {"noop_target_s": NOOP_TARGET, "dry_run_target_s": DRY_RUN_TARGET, "rss_target_mb": RSS_TARGET_MB,
               "avail_target_s": AVAIL_TARGET, "one_change_publish_target_s": ONE_CHANGE_PUBLISH_TARGET}
    if admins:
        small, big = admin_figures(1000, runs), admin_figures(10_000, runs)
        figures.update({f"{k}_1k": v for k, v in small.items()})
        figures.update({f"{k}_10k": v for k, v in big.items()})
        for k in small:
            if k != "load_average":
                figures[f"{k}_growth"] = round(big[k] / small[k], 2) if small[k] else None
    if users:
        figures.update(all_user_figures(max(1, min(runs, 3))))
        if os.path.isfile(LMOD_INIT):
            figures.update({f"{k}_10k": v for k, v in refresh_figures(10_000).items()})
            figures.update({f"{k}_10k": v for k, v in refresh_figures(10_000, layout="hierarchical").items()})
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-users", action="store_true", help="skip the module tools' figures")
    parser.add_argument("--users-only", action="store_true", help="only the module tools' figures")
    args = parser.parse_args()
    for key, value in main(args.runs, not args.no_users, not args.users_only).items():
        print(f"{key:>36}: {value}")
    sys.exit(0)
