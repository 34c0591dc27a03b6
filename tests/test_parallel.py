"""Parallel builds of real packages: `sitedist sync -j 2` overlaps independent builds and never starts a
package before its dependencies finish (checked from the build report's timestamps), and with
--keep-going a failure skips only its dependents. Each test has its own store, so the builds happen."""

import json
import os
import re

from conftest import run_cli, site_config, write

DAG = ["zlib", "libpng", "hello", "lz4", "libyaml"]


def name_of(entry):
    return entry["label"].split()[0]


def closure(packages):
    """key -> every key it depends on, transitively, within the report."""
    deps = {p["key"]: set(p["deps"]) for p in packages}
    done = {}

    def visit(key):
        if key not in done:
            done[key] = set(deps.get(key, ()))
            for d in deps.get(key, ()):
                done[key] |= visit(d)
        return done[key]

    for key in deps:
        visit(key)
    return done


def test_independent_builds_overlap_and_dependencies_come_first(tmp_path, sources):
    config = site_config(tmp_path, {p: None for p in DAG}, store=tmp_path / "store")
    run_cli("sync", "-j", "2", "--progress", "plain", config)
    report = json.loads(run_cli("report", config, "--json").stdout)
    with open(tmp_path / "store" / ".sitedist" / "reports" / "latest.json") as f:
        assert json.load(f) == report

    assert report["ok"] and report["meta"]["slots"] == 2
    ran = {p["key"]: p for p in report["packages"]}
    # Besides the packages, the run holds the host compiler's artifact (gcc), which they depend on.
    assert set(DAG) <= {name_of(p) for p in ran.values()}
    assert all(p["state"] == "done" and p["end"] > p["start"] for p in ran.values())

    # No build starts before every one of its dependencies has finished.
    by_name = {name_of(p): p for p in ran.values()}
    assert by_name["zlib"]["key"] in by_name["libpng"]["deps"]
    for p in ran.values():
        for dep in p["deps"]:
            assert ran[dep]["end"] <= p["start"], f"{p['label']} started before {ran[dep]['label']} ended"

    # At least two builds that do not depend on each other ran at the same time, on different slots.
    needs = closure(ran.values())
    overlapping = [(a["label"], b["label"]) for a in ran.values() for b in ran.values()
                   if a["key"] < b["key"] and a["key"] not in needs[b["key"]] and b["key"] not in needs[a["key"]]
                   and a["start"] < b["end"] and b["start"] < a["end"] and a["slot"] != b["slot"]]
    spans = [(p["label"], p["start"], p["end"]) for p in ran.values()]
    assert overlapping, f"no independent builds overlapped: {spans}"

    text = run_cli("report", config).stdout
    for name in DAG:
        assert re.search(rf"^{name} \S+\s+done\s", text, re.M), text
    assert f"{len(ran)} built, 0 failed, 0 skipped" in text
    html = run_cli("report", config, "--html").stdout.strip()
    assert html.endswith(".html") and "<svg" in open(html).read()


def test_keep_going_skips_dependents_only(tmp_path, sources):
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "README", "a local source directory\n")
    write(recipes / "broken.yml", """
        name: broken
        versions:
          "1.0": {path: src}
        build: commands
        commands:
          - echo "broken is about to fail"
          - "false"
        """)
    write(recipes / "needs-broken.yml", """
        name: needs-broken
        versions:
          "1.0": {path: src}
        depends:
          link: [broken]
        build: commands
        commands:
          - mkdir -p "$PREFIX/bin" && touch "$PREFIX/bin/needs-broken"
        """)
    store = tmp_path / "store"
    config = site_config(tmp_path, {"broken": None, "needs-broken": None, "zlib": None, "libyaml": None},
                         recipes=[recipes], store=store)
    proc = run_cli("sync", "-j", "2", "--keep-going", "--progress", "plain", config, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr

    failed = re.search(r"^FAILED (broken\S*): (.*)$", proc.stdout, re.M)
    assert failed, proc.stdout
    log = re.search(r"^  log: (\S+)$", proc.stdout, re.M).group(1)
    assert os.path.isfile(log) and "broken is about to fail" in open(log).read()
    assert re.search(rf"^skipped needs-broken\S*: .*{re.escape(failed.group(1))}", proc.stdout, re.M), proc.stdout

    artifacts = {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}
    assert artifacts["zlib"]["state"] == artifacts["libyaml"]["state"] == "complete"
    assert artifacts["broken"]["state"] == artifacts["needs-broken"]["state"] == "missing"
    assert os.path.exists(os.path.join(artifacts["libyaml"]["prefix"], "include", "yaml.h"))
    assert not os.path.exists(artifacts["needs-broken"]["prefix"])

    report = json.loads(run_cli("report", config, "--json").stdout)
    states = {name_of(p): p["state"] for p in report["packages"]}
    assert states.pop("gcc") == "done"
    assert states.pop("make") == states.pop("cmake") == "done", "the host build tools (admin_docs/build-tools.md)"
    assert states == {"broken": "failed", "needs-broken": "skipped", "zlib": "done", "libyaml": "done"}
    text = run_cli("report", config).stdout
    assert re.search(r"^failed:\n  broken 1.0: .*\n    log: " + re.escape(log), text, re.M), text


def test_report_without_a_sync_says_so(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, store=tmp_path / "store")
    proc = run_cli("report", config, check=False)
    assert proc.returncode != 0 and not (tmp_path / "store").exists()
    assert f"no build report yet in the store {tmp_path / 'store'}" in proc.stderr
    assert f"'sitedist sync {config}'" in proc.stderr



def test_a_fresh_store_starts_the_build_its_recipe_estimates_longest(tmp_path):
    """Before a store has timed any build, the recipes' build_estimate orders the ready builds (critical
    path first): with one slot, 'omega' (estimated 600 s) starts before 'alpha', which comes first
    without an estimate."""
    def order(estimates, name):
        recipes = tmp_path / name / "recipes"
        write(recipes / "src" / "README", "a local source directory\n")
        for pkg in ("alpha", "omega"):
            write(recipes / f"{pkg}.yml", f"""
                name: {pkg}
                versions:
                  "1.0": {{path: src}}
                build: commands
                {f"build_estimate: {estimates[pkg]}" if pkg in estimates else ""}
                commands:
                  - mkdir -p "$PREFIX/bin" && touch "$PREFIX/bin/{pkg}"
                """)
        config = site_config(tmp_path / name, {"alpha": None, "omega": None}, recipes=[recipes])
        run_cli("sync", "-j", "1", "--progress", "quiet", config)
        report = json.loads(run_cli("report", config, "--json").stdout)
        return [n for _, n in sorted((p["start"], name_of(p)) for p in report["packages"]
                                     if name_of(p) in ("alpha", "omega"))]

    assert order({}, "none") == ["alpha", "omega"]
    assert order({"omega": 600}, "estimated") == ["omega", "alpha"]
