"""Benchmark: the software catalog of a 10,000-module tree (5,000 packages), written and opened in Chromium.

Targets (issue 17): writing catalog.json and index.html for 10,000 modules under 1 s; the page's time to
interactive with 5,000 packages in headless Chromium under 1 s.

The tree is hierarchical: 5,000 packages with 1 to 3 versions each (10,000 modules), a third in Core, a
third built with gcc and a third with gcc + Open MPI, each artifact with a store marker (its build date).
- ``write_s``: ``write_catalog`` for the planned tree (reading the 10,000 markers, building the data,
  rendering the page, writing both files), wall time, median of 3; ``write_cpu_s`` the CPU time of the same
  (on a machine shared with other work, the wall time is this plus the wait for a CPU). The plan itself is made once beforehand: publishing
  makes it anyway for the modulefiles.
- ``tti_ms``: in headless Chromium (Debian's chromium and chromium-driver, through Selenium), from the start
  of the navigation to index.html (file://) to the first frame after the page's script has built its list
  (the search box then answers), median of 3 loads. ``search_ms``: typing one more letter into the search
  box until the next frame, with every package shown before (the most rows to change).
Run: python bench/bench_catalog.py [PACKAGES]
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sitedist.modules import ModuleEntry, plan_tree
from sitedist.modules.catalog import write_catalog

GCC, OMPI = ("gcc", "12.2.0"), ("openmpi", "4.1.4")
WORDS = ("fast", "parallel", "library", "solver", "sparse", "linear", "algebra", "mesh", "io", "hdf", "netcdf",
         "fourier", "transform", "quantum", "chemistry", "climate", "model", "python", "bindings", "tools")


def synthetic_tree(store, packages):
    """Entries of ``packages`` packages (about 2 versions each) with their prefixes' store markers."""
    def entry(name, version, i, **kw):
        aid = f"{i:032x}"
        prefix = f"{store}/{name}/{version}-{aid}"
        os.makedirs(f"{prefix}/.sitedist")
        with open(f"{prefix}/.sitedist/complete", "w") as f:
            json.dump({"id": aid, "completed": 1.7e9 + i}, f)
        return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=aid, **kw)

    entries = [entry("gcc", GCC[1], 0, kind="compiler", description="GNU compilers"),
               entry("openmpi", OMPI[1], 1, kind="mpi", description="Open MPI")]
    n = 2
    for p in range(packages):
        name = f"pkg{p:05d}"
        desc = " ".join(WORDS[(p * k) % len(WORDS)] for k in (1, 3, 7, 11)) + f" package number {p}"
        tc = {0: {}, 1: {"compiler": GCC, "toolchain": "gcc"},
              2: {"compiler": GCC, "mpi": OMPI, "toolchain": "gcc-openmpi"}}[p % 3]
        for v in range(1 + p % 3):
            entries.append(entry(name, f"{1 + v}.{p % 10}.{v}", n, description=desc,
                                 homepage=f"https://example.org/{name}", subdirs=("bin", "lib"), **tc))
            n += 1
    return entries


def page_timings(page, runs=3):
    from selenium.webdriver.common.by import By

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import chromium

    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    try:
        with chromium(profile) as driver:
            ttis = []
            for _ in range(runs):
                driver.get("about:blank")
                driver.get(Path(page).as_uri())
                ttis.append(driver.execute_async_script(
                    "const done = arguments[0];"
                    "const ready = () => document.documentElement.getAttribute('data-ready') === '1';"
                    "const wait = () => ready() ? requestAnimationFrame(() => done(performance.now()))"
                    "                           : setTimeout(wait, 5);"
                    "wait();"))
                shown = len(driver.find_elements(By.CSS_SELECTOR, "#list > li"))
            search = driver.execute_async_script(
                "const done = arguments[0], q = document.getElementById('q');"
                "q.value = ''; q.dispatchEvent(new Event('input'));"
                "requestAnimationFrame(() => { const t = performance.now(); q.value = 'p';"
                "  q.dispatchEvent(new Event('input'));"
                "  requestAnimationFrame(() => done(performance.now() - t)); });")
            return statistics.median(ttis), search, shown
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main(packages=5_000):
    base = tempfile.mkdtemp(prefix="bench-catalog-")
    try:
        entries = synthetic_tree(f"{base}/store", packages)
        config = {"root": f"{base}/modules", "layout": "hierarchical", "formats": ["lua", "tcl"],
                  "target": "x86_64_v3", "catalog": {"site_name": "Bench HPC", "logo_text": "B"}}
        t = time.perf_counter()
        plan = plan_tree(entries, config)
        t_plan = time.perf_counter() - t
        modules = sum(not m.hidden for m in plan.modules) - 2
        times, cpu = [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            write_catalog(plan, config, f"{base}/catalog", generation=1)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        page = f"{base}/catalog/index.html"
        size = os.path.getsize(page) / 1e6
        tti, search, shown = page_timings(page)
        figures = {"packages": packages, "modules": modules, "plan_s": round(t_plan, 3),
                   "write_s": round(statistics.median(times), 3), "write_target_s": 1.0,
                   "write_cpu_s": round(statistics.median(cpu), 3),
                   "page_mb": round(size, 2), "tti_ms": round(tti), "tti_target_ms": 1000,
                   "search_ms": round(search), "rows": shown}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for k, v in figures.items():
        print(f"{k}: {v}")
    return figures


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
