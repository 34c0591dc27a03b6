"""Benchmark: generate 10,000 modulefiles in both formats from a synthetic store, then publish again.

Targets (issues 4 and 13): the full generation under 3 s, a re-publish with nothing changed under 0.3 s, a
re-publish after one artifact changed under 0.3 s (median of 5, each a different package; the new
generation shares every other module name's content directory with the one before). What the one-change
publishes wrote is reported too (``one_changed_written_dirs``: new content directories, one per format is
one module name; ``one_changed_rendered``: files rendered; ``one_changed_links``: symlinks of the new
generation, one per module name and format, of which ``one_changed_made_links`` were made, the others kept
from the spare, the generation pruned before; ``one_changed_new_content``: directories added under
content/), so that "in proportion to the change" is checked, not assumed.
Also measured, to read the figures against the machine: the time the file system takes to create the same
directories and files with no rendering at all and flush them to disk (on a busy disk this alone can exceed
the target); ``generation_overhead_s`` is the full publish minus that.
Run: python bench/bench_modules.py [N] [DIRECTORY]   (DIRECTORY: where to publish; default: the temp dir;
/dev/shm, a tmpfs, shows the figures without the disk)
"""

import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time

from sitedist.modules import ModuleEntry, publish

SUBDIRS = ("bin", "lib", "include", "share/man", "lib/pkgconfig", "lib/cmake")


def synthetic_entries(n, store="/nonexistent/store"):
    """n entries: n/4 packages with 4 versions each; one version in four built with a second toolchain
    (told apart by the 'toolchain' rule), every fifth package needing the first package's first version."""
    entries = []
    first = None
    for i in range(n):
        name, version = f"pkg{i // 4:05d}", f"{1 + i % 2}.{i % 7}.{i % 4}"
        toolchain = "gcc-openmpi" if i % 4 == 3 else ""
        aid = hashlib.sha256(f"{i}".encode()).hexdigest()[:32]
        deps = ((first.name, first.version, first.artifact_id),) if first and i % 5 == 0 else ()
        e = ModuleEntry(name=name, version=version, prefix=f"{store}/{name}/{version}-{aid}", artifact_id=aid,
                        description=f"Synthetic package {i}", homepage="https://example.org",
                        toolchain=toolchain, run_depends=deps, subdirs=SUBDIRS, explicit=i % 3 != 0,
                        env=(("set", f"{name.upper()}_DATA", "{prefix}/share/data"),))
        first = first or e
        entries.append(e)
    return entries


def fs_baseline(directory, tree):
    """Seconds to create the directories and files of ``tree`` (a generation directory) with fixed content,
    durably."""
    files = [os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree, followlinks=True) for f in fs]
    dirs = sorted({os.path.dirname(f) for f in files})
    base = tempfile.mkdtemp(prefix="bench-fs-", dir=directory)
    try:
        t = time.perf_counter()
        for d in dirs:
            os.makedirs(os.path.join(base, d), exist_ok=True)
        for f in files:
            with open(os.path.join(base, f), "w") as out:
                out.write("x" * 900)
        os.sync()   # publishing flushes its tree to disk before switching; so does the baseline
        return time.perf_counter() - t
    finally:
        shutil.rmtree(base)


def measure(n=10_000, directory=None):
    """The figures of one tree of n modules (see the module docstring)."""
    entries = synthetic_entries(n)
    root = tempfile.mkdtemp(prefix="bench-modules-", dir=directory)
    try:
        config = {"root": root, "formats": ["lua", "tcl"], "layout": "flat", "disambiguate": ["toolchain"],
                  "keep": 2}
        t, c = time.perf_counter(), time.process_time()
        full = publish(entries, config)
        t_full, c_full = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        same = publish(entries, config)
        t_same = time.perf_counter() - t
        changed = list(entries)
        t_one, c_one, written = [], [], []
        content = os.path.join(root, "content")
        # seven different packages, one at a time; the first two not measured: from the third on, each
        # publish prunes a generation and starts from the one pruned before (generations/.spare), as every
        # publish of a site's tree does once it has 'keep' generations
        for k in range(7):
            i = n // 2 + 4 * k
            e = changed[i]
            changed[i] = ModuleEntry(**{**e.__dict__, "artifact_id": f"{k}" * 32, "prefix": e.prefix + "-rebuilt"})
            before = set(os.listdir(content))
            t, c = time.perf_counter(), time.process_time()
            one = publish(changed, config)
            if k < 2:
                continue
            t_one.append(time.perf_counter() - t)
            c_one.append(time.process_time() - c)
            written.append((one, len(set(os.listdir(content)) - before)))
        t_fs = fs_baseline(directory, one.path)   # the same files as the first generation (pruned by now)
    finally:
        shutil.rmtree(root)
    one, new_content = written[0]
    assert full.changed and not same.changed
    # in proportion to the change: one module name's directory per format, rendered whole
    assert all(o.written_dirs == 2 and o.rendered == 2 * 4 + 2 and added == 2 for o, added in written), written
    assert all(o.pruned and o.made_links <= 2 * 3 for o, _ in written), written   # the links of 3 changes at most
    figures = {
        "directory": directory or tempfile.gettempdir(), "modules": full.modules, "files": full.rendered,
        "full_publish_s": round(t_full, 3), "full_target_s": 3.0,
        "full_publish_cpu_s": round(c_full, 3),   # this process's CPU time: what the work costs on a busy machine
        "unchanged_republish_s": round(t_same, 4), "unchanged_target_s": 0.3,
        "one_changed_republish_s": round(statistics.median(t_one), 3), "one_changed_target_s": 0.3,   # issue 13
        "one_changed_all_s": [round(x, 3) for x in t_one],
        "one_changed_cpu_s": round(statistics.median(c_one), 3),
        "one_changed_written_dirs": one.written_dirs, "one_changed_rendered": one.rendered,
        "one_changed_new_content": new_content, "one_changed_links": one.links,
        "one_changed_made_links": one.made_links,
        "one_changed_linked_dirs": one.linked_dirs, "one_changed_reused": one.reused,
        "full_links": full.links, "fs_baseline_s": round(t_fs, 3),
        "generation_overhead_s": round(t_full - t_fs, 3),
    }
    return figures


def main(n=10_000, directory=None, small=1_000):
    """measure(n), with the full and one-change publishes of a tree of ``small`` modules too (keys ending in
    ``_1k`` for 1,000) and the growth from that to n (``_growth``), as issue 13 asks for each figure."""
    figures = measure(n, directory)
    if small and small < n:
        tag = f"_{small // 1000}k" if small % 1000 == 0 else f"_{small}"
        few = measure(small, directory)
        for key in ("full_publish_s", "one_changed_republish_s", "one_changed_cpu_s"):
            figures[key + tag] = few[key]
            figures[key + "_growth"] = round(figures[key] / few[key], 1)
    return figures


if __name__ == "__main__":
    figures = main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, sys.argv[2] if len(sys.argv) > 2 else None)
    for key, value in figures.items():
        print(f"{key:26} {value}")
    ok = figures["full_publish_s"] < 3.0 and figures["unchanged_republish_s"] < 0.3 \
        and figures["one_changed_republish_s"] < 0.3
    print("targets met" if ok else "TARGETS MISSED")
