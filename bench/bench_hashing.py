"""Source hashing benchmark: sha256 throughput of ``sitedist.core.hashing.file_sha256`` on a 1 GiB file
against ``sha256sum`` on the same file, median of 3 each, page cache warm for both.

Target (issue 7): file_sha256 reaches at least 0.9 of sha256sum's throughput. The file (random data) is
made in $TMPDIR and deleted afterwards.

    python bench/bench_hashing.py [--size-mib N] [--runs N]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time

from sitedist.core.hashing import file_sha256

TARGET = 0.9


def make_file(path, size):
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(block[i % 256:] + block[:i % 256])  # differing blocks, without 1 GiB of urandom


def timed(fn):
    began = time.perf_counter()
    digest = fn()
    return time.perf_counter() - began, digest


def sha256sum(path):
    out = subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True).stdout
    return out.split()[0]


def main(size_mib=1024, runs=3):
    size = size_mib << 20
    fd, path = tempfile.mkstemp(prefix="bench-hashing-", suffix=".bin")
    os.close(fd)
    try:
        make_file(path, size)
        sha256sum(path)  # both read from the page cache from here on
        ours, theirs = [], []
        for _ in range(runs):  # alternated, so that a busy moment does not fall on one side only
            t, mine = timed(lambda: file_sha256(path))
            ours.append(t)
            t, ref = timed(lambda: sha256sum(path))
            theirs.append(t)
            if mine != ref:
                raise RuntimeError(f"file_sha256 gave {mine}, sha256sum {ref}")
    finally:
        os.unlink(path)
    mb = size / 1e6
    ours_mb_s, theirs_mb_s = mb / statistics.median(ours), mb / statistics.median(theirs)
    return {"size_mib": size_mib, "runs": runs, "file_sha256_mb_s": round(ours_mb_s, 1),
            "sha256sum_mb_s": round(theirs_mb_s, 1), "ratio": round(ours_mb_s / theirs_mb_s, 3), "target": TARGET}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures = main(args.size_mib, args.runs)
    for name, value in figures.items():
        print(f"{name:>16}: {value}")
    print(f"file_sha256 / sha256sum = {figures['ratio']:.3f} (target >= {TARGET})")
