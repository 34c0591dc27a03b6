"""Binary cache benchmark (issue 15), on bench_sync's 1,000 generated packages (built there once):

- install all 1,000 from a signed directory cache into an empty store: one ``sitedist sync -j 2``, whole
  process, wall time (target under 10 s; building them takes about 25 s on the reference machine);
- relocation throughput: ``sitedist.cache.relocate`` rewriting a large synthetic artifact (text files and
  binaries holding its store path), in MB of files per second;
- ``sync --dry-run`` against a cache whose index has 10,000 entries (the 1,000 wanted among them):
  whole process, median of 5 (target under 1 s).

    python bench/bench_cache.py [--runs N] [--relocate-mb N]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_sync import bench_root, build_once, generate  # noqa: E402
from timing import median_wall, sitedist_command  # noqa: E402

INSTALL_TARGET = 10.0
DRY_RUN_TARGET = 1.0
INDEX_ENTRIES = 10000


def prepare(root):
    """Keys, the cache of the 1,000 packages (pushed once), and configs: ``cached.yml`` (an empty store
    that installs from the cache) and ``big-index.yml`` (the same against a copy with 10,000 index entries)."""
    keys, cache, big = (os.path.join(root, d) for d in ("cache-keys", "cache", "cache-10k"))
    if not os.path.exists(os.path.join(keys, "bench.key")):
        subprocess.run(sitedist_command() + ["cache", "keygen", "bench", keys], check=True, stdout=subprocess.DEVNULL)
    # Pushed every run: ids change with sitedist's protocol, and pushing what is there already is a no-op,
    # so a cache left by an older sitedist gains this one's entries instead of serving none of them.
    began = time.perf_counter()
    subprocess.run(sitedist_command() + ["cache", "push", os.path.join(root, "site.yml"), cache, "--key",
                                         os.path.join(keys, "bench.key")], check=True, stdout=subprocess.DEVNULL)
    push_s = time.perf_counter() - began
    # the 10,000-entry copy, made again from this run's index
    shutil.rmtree(big, ignore_errors=True)
    tmp = f"{big}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for sub in ("manifests", "archives"):
        os.symlink(os.path.join(cache, sub), os.path.join(tmp, sub))
    index = json.load(open(os.path.join(cache, "index.json")))
    real = dict(index["entries"])
    for i in range(INDEX_ENTRIES - len(real)):
        aid = f"{i:020d}".translate(str.maketrans("0123456789", "abcdefghij"))
        index["entries"][aid] = {"name": f"other{i}", "version": "1.0", "manifest": f"manifests/{aid}.json",
                                 "archive": f"archives/{aid}.tar.gz", "sha256": "0" * 64, "size": 1}
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(index, f)
    os.replace(tmp, big)
    with open(os.path.join(root, "site.yml")) as f:
        body = f.read().split("\n", 1)[1]  # everything but 'store:'
    for name, store, url in (("cached.yml", "cached-store", cache), ("big-index.yml", "big-index-store", big)):
        with open(os.path.join(root, name), "w") as f:
            f.write(f"store: {store}\n{body}caches:\n  - {{url: {url}, trusted_keys: [{keys}/bench.pub]}}\n")
    return push_s


def install_all(root):
    store = os.path.join(root, "cached-store")
    if os.path.exists(store):
        subprocess.run(["chmod", "-R", "u+w", store], check=True)
        shutil.rmtree(store)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.run(sitedist_command() + ["sync", "-j", "2", "--json", "--progress", "quiet",
                                                os.path.join(root, "cached.yml")], capture_output=True, text=True)
    took = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"install from the cache failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    built = [k for k in summary["built"] if k.startswith("p")]
    if built or len(summary["fetched"]) != 1000:
        raise RuntimeError(f"expected 1,000 fetched and nothing built: {len(summary['fetched'])} fetched, "
                           f"built {built[:5]}")
    return took, cpu


def relocation(mb):
    """MB/s of relocate() over a synthetic artifact of ``mb`` MB: half text files (every line holding the
    store path), half binaries (a path string every 4 KiB), all in the manifest's relocation list."""
    from sitedist.cache.relocate import relocate, scan

    work = tempfile.mkdtemp(prefix="bench-relocate-")
    try:
        old = os.path.join(work, "old-store-" + "x" * 40, "big", "1.0-" + "a" * 20)
        new = os.path.join(work, "new", "big", "1.0-" + "a" * 20)
        os.makedirs(os.path.join(old, "lib"))
        os.makedirs(os.path.join(old, "share"))
        size = 1 << 20
        for i in range(mb):
            if i % 2:
                line = f"prefix={old}/lib/pkgconfig # {i}\n".encode()
                data = line * (size // len(line))
                path = os.path.join(old, "share", f"f{i}.txt")
            else:
                block = (old.encode() + b"/lib\0").ljust(4096, b"\x01")
                data = block * (size // 4096)
                path = os.path.join(old, "lib", f"lib{i}.a")
            with open(path, "wb") as f:
                f.write(data)
        olds = [os.path.dirname(os.path.dirname(old)).encode() + b"/"]
        places = scan(old, olds)
        os.makedirs(os.path.dirname(new))
        shutil.copytree(old, new)
        mapping = [(olds[0], os.path.dirname(os.path.dirname(new)).encode() + b"/")]
        began = time.perf_counter()
        relocate(new, places, mapping, "bench")
        took = time.perf_counter() - began
        return mb / took
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(seed=1, packages=1000, runs=5, relocate_mb=200):
    root = bench_root(seed, packages)
    generate(root, seed, packages)
    build_once(root)
    push_s = prepare(root)
    install_s, install_cpu = install_all(root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    dry = median_wall(sitedist_command() + ["sync", "--dry-run", os.path.join(root, "big-index.yml")], runs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    dry_cpu = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / runs
    if os.path.exists(os.path.join(root, "big-index-store")):
        raise RuntimeError("a dry run created its store")
    return {"bench_dir": root, "push_s": round(push_s, 2) if push_s else None,
            "install_s": round(install_s, 2), "install_target_s": INSTALL_TARGET,
            "install_cpu_s": round(install_cpu, 2),
            "relocate_mb_s": round(relocation(relocate_mb), 1),
            "dry_run_10k_s": round(dry, 3), "dry_run_target_s": DRY_RUN_TARGET,
            "dry_run_10k_cpu_s": round(dry_cpu, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--relocate-mb", type=int, default=200)
    args = parser.parse_args()
    for name, value in main(runs=args.runs, relocate_mb=args.relocate_mb).items():
        print(f"{name:>16}: {value}")
