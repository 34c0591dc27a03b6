"""Sync benchmark: a no-op ``sitedist sync`` over 1,000 packages that are all present, and a dry run over
the same config with an empty store (all missing). Whole process, wall time, median of 5.

Targets (issue 2): no-op under 0.5 s, dry run under 1 s.

The generated config (seeded random DAG of synthetic ``build: commands`` recipes, each with its own tiny
tarball in a mirror directory) and its store live in ``$TMPDIR/sitedist-bench-sync-g<G>-s<seed>-n<N>``:
the first run builds the 1,000 packages once with ``-j 2`` (minutes); later runs reuse them.

    python bench/bench_sync.py [--seed N] [--packages N] [--runs N] [--profile]

``--profile`` also prints where a no-op sync spends its time: ``python -X importtime`` (the slowest
imports) and cProfile (the top 15 sitedist functions by cumulative time, and the top 15 by own time).
"""

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from timing import median_wall, sitedist_command

NOOP_TARGET = 0.5
DRY_RUN_TARGET = 1.0
GENERATOR = 1  # bump when the generated files change: it names the cache directory
# Links stay within blocks of 1,000 packages (10,000 packages are 10 stacks of 1,000, as at a centre whose
# many modules are versions and toolchains of far fewer packages): in one random DAG of 10,000 the closure
# of a package's link dependencies reaches thousands of prefixes, and the build environment's search
# paths then pass the kernel's limit on one variable (128 KiB: "Argument list too long").
BLOCK = 1000


def bench_root(seed, n):
    return os.path.join(tempfile.gettempdir(), f"sitedist-bench-sync-g{GENERATOR}-s{seed}-n{n}")


def tarball(name):
    """A reproducible .tar.gz holding ``<name>-1.0/README``."""
    data = f"synthetic package {name}\n".encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"{name}-1.0/README")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def generate(root, seed, n):
    """Recipes, a mirror with SHA256SUMS, ``site.yml`` (store ``store/``) and ``empty.yml`` (a store that a
    dry run never creates). Package i link-depends on up to 3 of the 40 before it, within its block of
    1,000 (BLOCK). Written beside and
    renamed into place, so an interrupted run leaves nothing half made."""
    if os.path.isfile(os.path.join(root, "site.yml")):
        return
    rng = random.Random(seed)
    tmp = f"{root}.part-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "recipes"))
    os.makedirs(os.path.join(tmp, "mirror"))
    sums = []
    for i in range(n):
        name = f"p{i}"
        data = tarball(name)
        sha = hashlib.sha256(data).hexdigest()
        with open(os.path.join(tmp, "mirror", f"{name}-1.0.tar.gz"), "wb") as f:
            f.write(data)
        sums.append(f"{sha}  {name}-1.0.tar.gz\n")
        lo = max(i - i % BLOCK, i - 40)
        deps = sorted(f"p{j}" for j in rng.sample(range(lo, i), min(i - lo, rng.randint(0, 3))))
        with open(os.path.join(tmp, "recipes", f"{name}.yml"), "w") as f:
            f.write(f"name: {name}\n"
                    f"description: synthetic package {i}\n"
                    f"versions:\n"
                    f'  "1.0": {{url: "https://example.invalid/{name}-1.0.tar.gz", sha256: "{sha}"}}\n'
                    f"depends:\n  link: [{', '.join(deps)}]\n"
                    f"build: commands\n"
                    f"commands:\n"
                    f'  - mkdir -p "$PREFIX/bin" && touch "$PREFIX/bin/{name}"\n')
    with open(os.path.join(tmp, "mirror", "SHA256SUMS"), "w") as f:
        f.writelines(sums)
    packages = "".join(f"  p{i}: {{}}\n" for i in range(n))
    for config, store in (("site.yml", "store"), ("empty.yml", "empty-store")):
        with open(os.path.join(tmp, config), "w") as f:
            f.write(f"store: {store}\nrecipes: [recipes]\nmirrors: [mirror]\npackages:\n{packages}")
    os.replace(tmp, root)


def build_once(root):
    """Build whatever is missing in the benchmark store (everything, the first time); returns seconds."""
    began = time.perf_counter()
    with open(os.path.join(root, "build.log"), "a") as log:
        proc = subprocess.run(sitedist_command() + ["sync", "-j", "2", "--progress", "plain",
                                                    os.path.join(root, "site.yml")], stdout=log, stderr=log)
    if proc.returncode != 0:
        raise RuntimeError(f"building the benchmark store failed; see {os.path.join(root, 'build.log')}")
    return time.perf_counter() - began


def main(seed=1, packages=1000, runs=5):
    root = bench_root(seed, packages)
    generate(root, seed, packages)
    build_s = build_once(root)
    site, empty = os.path.join(root, "site.yml"), os.path.join(root, "empty.yml")
    noop = median_wall(sitedist_command() + ["sync", site], runs)
    dry = median_wall(sitedist_command() + ["sync", "--dry-run", empty], runs)
    if os.path.exists(os.path.join(root, "empty-store")):
        raise RuntimeError("a dry run created its store")
    return {"packages": packages, "seed": seed, "runs": runs, "bench_dir": root,
            "build_or_check_s": round(build_s, 2),
            "noop_sync_s": round(noop, 3), "noop_target_s": NOOP_TARGET,
            "dry_run_s": round(dry, 3), "dry_run_target_s": DRY_RUN_TARGET}


def profile(root, top=15):
    """Print where a no-op sync spends its time: the slowest imports and cProfile's top functions."""
    site = os.path.join(root, "site.yml")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sitedist.cli.main", "sync", site],
                          capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            own, total, name = line[len("import time:"):].split("|")
            rows.append((int(total), int(own), name.rstrip()))
    print(f"\n== python -X importtime: {sum(r[1] for r in rows) / 1e6:.3f} s in {len(rows)} imports; "
          f"slowest by cumulative time ==")
    print(f"{'cumul ms':>9} {'self ms':>8}  module")
    for total, own, name in sorted(rows, reverse=True)[:top]:
        print(f"{total / 1000:9.1f} {own / 1000:8.1f}  {name}")
    stats = os.path.join(tempfile.mkdtemp(prefix="bench-sync-prof-"), "noop.prof")
    subprocess.run([sys.executable, "-m", "cProfile", "-o", stats, "-m", "sitedist.cli.main", "sync", site],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import pstats

    print(f"\n== cProfile of a no-op sync: top {top} sitedist functions by cumulative time ==")
    pstats.Stats(stats).sort_stats("cumulative").print_stats("sitedist/", top)
    print(f"== top {top} by own time ==")
    pstats.Stats(stats).sort_stats("tottime").print_stats(top)
    shutil.rmtree(os.path.dirname(stats))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also profile a no-op sync")
    args = parser.parse_args()
    figures = main(args.seed, args.packages, args.runs)
    for name, value in figures.items():
        print(f"{name:>18}: {value}")
    print(f"no-op sync {figures['noop_sync_s']:.3f} s (target < {NOOP_TARGET}), "
          f"dry run {figures['dry_run_s']:.3f} s (target < {DRY_RUN_TARGET})")
    if args.profile:
        profile(figures["bench_dir"])
