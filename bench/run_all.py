"""Run every benchmark and print one table: figure, value, target, pass/fail.

    python3 bench/run_all.py [BENCH ...]     # e.g. 'sync startup'; default: all but 'scale' and 'hpc_stack'
    python3 bench/run_all.py --scale         # all, with the 10,000-package benchmark

A benchmark is not a test: a missed target is marked MISSED and the exit status stays 0. A benchmark
that cannot run at all (an exception) is marked ERROR and makes the exit status 1. Nothing is written
besides what the benchmarks themselves keep (bench_sync's store cache under $TMPDIR).
"""

import importlib
import operator
import os
import sys
import time
import traceback

# bench module -> rows of (figure, key of the value, comparison, key of the target), all keys being
# those of the dict the module's main() returns; a row without a comparison is information only.
ROWS = {
    "bench_scheduler": [("scheduler: makespan / lower bound (200 sleep jobs, 2 slots)", "ratio", "<=", "target")],
    "bench_sync": [("no-op sync, 1,000 packages present (s, whole process)", "noop_sync_s", "<", "noop_target_s"),
                   ("dry run, 1,000 packages missing (s, whole process)", "dry_run_s", "<", "dry_run_target_s")],
    "bench_lock": [("sitedist lock, 1,000 packages (s, whole process)", "lock_s", "<", "lock_target_s"),
                   ("sync --locked, no-op, 1,000 packages (s, whole process)", "locked_sync_s", "<", "locked_target_s"),
                   ("sync --from-history, 100 packages, no build (s)", "restore_s", "<", "restore_target_s")],
    "bench_cache": [("cache: install 1,000 small artifacts from a directory cache (s, whole sync)", "install_s", "<",
                     "install_target_s"),
                    ("  cache: the same, CPU time of the sync (s)", "install_cpu_s", None, None),
                    ("  cache: relocation of a 200 MB artifact (MB/s)", "relocate_mb_s", None, None),
                    ("cache: sync --dry-run, 1,000 missing, 10,000-entry index (s, whole process)", "dry_run_10k_s",
                     "<", "dry_run_target_s"),
                    ("  cache: the same, CPU time (s)", "dry_run_10k_cpu_s", None, None)],
    "bench_startup": [("sitedist --help (s, whole process)", "help_s", "<", "target_s")],
    "bench_hashing": [("file_sha256 / sha256sum throughput (1 GiB)", "ratio", ">=", "target"),
                      ("  file_sha256 (MB/s)", "file_sha256_mb_s", None, None),
                      ("  sha256sum (MB/s)", "sha256sum_mb_s", None, None)],
    "bench_modules": [("modules: 10,000 modulefiles, full publish (s)", "full_publish_s", "<", "full_target_s"),
                      ("  modules: the same at 1,000 (s)", "full_publish_s_1k", None, None),
                      ("  modules: growth 1,000 -> 10,000 (x)", "full_publish_s_growth", None, None),
                      ("modules: unchanged re-publish (s)", "unchanged_republish_s", "<", "unchanged_target_s"),
                      ("modules: one artifact changed, re-publish (s)", "one_changed_republish_s", "<",
                       "one_changed_target_s"),
                      ("  modules: the same, CPU time (s)", "one_changed_cpu_s", None, None),
                      ("  modules: the same at 1,000 (s)", "one_changed_republish_s_1k", None, None),
                      ("  modules: growth 1,000 -> 10,000 (x)", "one_changed_republish_s_growth", None, None),
                      ("  modules: links it made, of the tree's 5,000 (the others kept from the spare)",
                       "one_changed_made_links", None, None),
                      ("  modules: the disk alone: mkdir and write the same files, no rendering (s)", "fs_baseline_s",
                       None, None)],
    "bench_slurm": [("slurm: submitting sync's CPU per job (s, 100 trivial artifacts)", "cpu_per_job_s", "<",
                     "target_s"),
                    ("  slurm: makespan, 100-package DAG of sleep 1 (s)", "makespan_slurm_s", None, None),
                    ("  local: makespan, same DAG, -j node CPUs (s)", "makespan_local_s", None, None)],
    "bench_catalog": [("catalog: write for 10,000 modules (s)", "write_s", "<", "write_target_s"),
                      ("  catalog: the same, CPU time (s)", "write_cpu_s", None, None),
                      ("catalog: page time to interactive, 5,000 packages, Chromium (ms)", "tti_ms", "<",
                       "tti_target_ms"),
                      ("  catalog: one more letter in the search box, to the next frame (ms)", "search_ms", None,
                       None)],

    "bench_scale": [("scale: no-op sync, 10,000 packages present (s, whole process)", "noop_s_10k", "<", "noop_target_s"),
                    ("  scale: the same, CPU time (s)", "noop_cpu_s_10k", None, None),
                    ("  scale: the same at 1,000 (s)", "noop_s_1k", None, None),
                    ("  scale: growth 1,000 -> 10,000 (x)", "noop_s_growth", None, None),
                    ("scale: dry run, 10,000 packages missing (s, whole process)", "dry_run_s_10k", "<",
                     "dry_run_target_s"),
                    ("  scale: the same, CPU time (s)", "dry_run_cpu_s_10k", None, None),
                    ("  scale: the same at 1,000 (s)", "dry_run_s_1k", None, None),
                    ("  scale: growth 1,000 -> 10,000 (x)", "dry_run_s_growth", None, None),
                    ("scale: peak RSS, no-op sync, 10,000 (MB)", "noop_rss_mb_10k", "<", "rss_target_mb"),
                    ("  scale: the same at 1,000 (MB)", "noop_rss_mb_1k", None, None),
                    ("scale: peak RSS, dry run, 10,000 (MB)", "dry_run_rss_mb_10k", "<", "rss_target_mb"),
                    ("  scale: the same at 1,000 (MB)", "dry_run_rss_mb_1k", None, None),
                    ("scale: Lmod module avail, 10,000 modules, spider cache (s)", "lmod_cache_avail_s_10k", "<",
                     "avail_target_s"),
                    ("  scale: the same, CPU time (s)", "lmod_cache_avail_cpu_s_10k", None, None),
                    ("  scale: the same at 1,000, CPU time (s)", "lmod_cache_avail_cpu_s_1k", None, None),
                    ("  scale: growth 1,000 -> 10,000, CPU (x)", "lmod_cache_avail_cpu_s_growth", None, None),
                    ("  scale: Lmod module avail, no cache, CPU (s)", "lmod_no_cache_avail_cpu_s_10k", None, None),
                    ("  scale: Lmod module spider NAME, cache, CPU (s)", "lmod_cache_spider_cpu_s_10k", None, None),
                    ("  scale: (no cache)", "lmod_no_cache_spider_cpu_s_10k", None, None),
                    ("  scale: Lmod module load NAME, cache, CPU (s)", "lmod_cache_load_cpu_s_10k", None, None),
                    ("  scale: (cache and LMOD_CACHED_LOADS=yes)", "lmod_cached_loads_load_cpu_s_10k", None, None),
                    ("  scale: (no cache)", "lmod_no_cache_load_cpu_s_10k", None, None),
                    ("  scale: Lmod start-up alone, CPU (s)", "lmod_cache_init_only_cpu_s_10k", None, None),
                    ("  scale: Lmod spider cache, 10,000 modules (MB)", "lmod_cache_mb_10k", None, None),
                    ("  scale: refreshing it, CPU (s)", "lmod_cache_refresh_cpu_s_10k", None, None),
                    ("  scale: refreshing it after one change, Lmod on that name only, 10,000 (s)",
                     "lmod_cache_splice_s_10k", None, None),
                    ("  scale: the same, CPU time (s)", "lmod_cache_splice_cpu_s_10k", None, None),
                    ("  scale: the same file as a full refresh (byte for byte)", "lmod_cache_splice_identical_10k",
                     None, None),
                    ("scale: one artifact changed, re-publish with modules.lmod_cache, 10,000 modules (s)",
                     "lmod_cache_one_change_publish_s_10k", "<", "one_change_publish_target_s"),
                    ("  scale: the same, CPU time (s)", "lmod_cache_one_change_publish_cpu_s_10k", None, None),
                    ("  scale: hierarchical tree, full refresh of the spider cache, 10,000 (s)",
                     "lmod_cache_hierarchical_full_refresh_s_10k", None, None),
                    ("  scale: hierarchical, refresh after one change, Lmod on that name only (s)",
                     "lmod_cache_hierarchical_splice_s_10k", None, None),
                    ("  scale: the same file as a full refresh (byte for byte)",
                     "lmod_cache_hierarchical_splice_identical_10k", None, None),
                    ("scale: hierarchical, one artifact changed, re-publish with modules.lmod_cache (s)",
                     "lmod_cache_hierarchical_one_change_publish_s_10k", "<", "one_change_publish_target_s"),
                    ("  scale: Environment Modules 5 module avail, Tcl tree, CPU (s)", "em5_avail_cpu_s_10k", None,
                     None),
                    ("  scale: Environment Modules 5 module avail NAME, CPU (s)", "em5_avail_name_cpu_s_10k", None,
                     None),
                    ("  scale: Environment Modules 5 module load NAME, CPU (s)", "em5_load_cpu_s_10k", None, None),
                    ("  scale: hierarchical 10,000, Lmod module avail, Core, cache (s)",
                     "lmod_hier_core_avail_cache_s_10k", None, None),
                    ("  scale: hierarchical 10,000, the same with a compiler and MPI loaded (s)",
                     "lmod_hier_mpi_avail_cache_s_10k", None, None),
                    ("  scale: load average during the module figures", "load_average_users_10k", None, None),
                    ("  scale: load average during the sync figures", "load_average_10k", None, None)],
    "bench_hpc_stack": [("HPC stack: sitedist sync site_configs/hpc -j 2, fresh store (s, whole sync)", "sync_wall_s",
                         None, None),
                        ("HPC stack: makespan / lower bound (build report)", "ratio", "<=", "target")],
}
# Run only when named (python3 bench/run_all.py scale) or with --scale: the first run builds 10,000
# packages (about 20 minutes on 2 CPUs); later runs take a few minutes.
# bench_hpc_stack (python3 bench/run_all.py hpc_stack) builds site_configs/hpc: tens of minutes on 2 CPUs.
ONLY_WHEN_NAMED = {"bench_scale", "bench_hpc_stack"}
COMPARE = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}


def run(names):
    """Rows of (figure, value, target, verdict) and whether every benchmark ran."""
    table, all_ran = [], True
    for name in names:
        # what the benchmark before wrote reaches the disk now, not during this one (bench_hashing's 1 GiB
        # file, written back after it is deleted, made the next full publish's disk 4x slower)
        os.sync()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        try:
            figures = importlib.import_module(name).main()
        except Exception:
            traceback.print_exc()
            table.append((name, "-", "-", "ERROR"))
            all_ran = False
            continue
        print(f"  {name} took {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
        if figures.get("skipped"):  # what it needs is absent here (bench_slurm without a Slurm cluster)
            table.append((name, "-", "-", "skipped"))
            continue
        for figure, key, op, target_key in ROWS[name]:
            if op is None:
                table.append((figure, figures[key], "", ""))
                continue
            target = figures[target_key]
            met = COMPARE[op](figures[key], target)
            table.append((figure, figures[key], f"{op} {target}", "pass" if met else "MISSED"))
    return table, all_ran


def main(argv):
    scale = "--scale" in argv
    argv = [a for a in argv if a != "--scale"]
    names = [a if a.startswith("bench_") else f"bench_{a}" for a in argv] or [
        n for n in ROWS if n not in ONLY_WHEN_NAMED or (scale and n == "bench_scale")]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(ROWS)}")
    table, all_ran = run(names)
    rows = [("figure", "value", "target", "result")] + [tuple(map(str, row)) for row in table]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    rows.insert(1, tuple("-" * w for w in widths))
    for row in rows:  # a Markdown table, to paste into bench/README.md as it is
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    missed = sum(row[3] == "MISSED" for row in table)
    errors = sum(row[3] == "ERROR" for row in table)
    print(f"\n{missed} target(s) missed" if missed else "\nall targets met", end="")
    print(f", {errors} benchmark(s) could not run" if errors else "")
    return 0 if all_ran else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
