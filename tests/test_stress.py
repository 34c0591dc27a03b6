"""Eight `sitedist sync` processes at once, on overlapping configs, against one store: all succeed and
every artifact is built exactly once.

Every recipe's build appends its own prefix to a counter file shared by all processes (synthetic
recipes, and the real zlib with a post_install line), so a second build of anything would show as a
second line. Two configs ask for a package with an option changed (another artifact of one recipe);
four configs publish into one module tree, four into another.
"""

import collections
import json
import os
import subprocess
import sys

import yaml

from conftest import RECIPES, run_cli
from modtools import ModuleShell
from storetools import config, synthetic, verify

GRAPH = {"core": (), "util": ("core",), "net": ("core",), "app": ("util", "net", "zlib"), "tool": ("util",),
         "viz": ("net", "zlib"), "db": ("core", "zlib"), "cli": ("tool", "db")}
CONFIGS = [("app", "tool"), ("viz", "db"), ("cli",), ("app", "viz"), ("tool", "db", "core"), ("cli", "viz"),
           ("app",), ("db", "net", "util")]


def test_eight_concurrent_syncs_build_everything_once(tmp_path):
    recipes = tmp_path / "recipes"
    counter = tmp_path / "builds.txt"
    options = {"flavor": {"default": "plain", "description": "a string that enters the build"}}
    for name, deps in GRAPH.items():
        synthetic(recipes, name, deps=deps, counter=counter, options=options if name == "util" else None,
                  commands=['echo {{ options.flavor }} > "$PREFIX/share/flavor"'] if name == "util" else ())
    zlib = yaml.safe_load(open(os.path.join(RECIPES, "zlib.yml")))
    zlib["post_install"] = [f'echo "$PREFIX" >> {counter}']
    with open(recipes / "zlib.yml", "w") as f:
        yaml.safe_dump(zlib, f)

    store = tmp_path / "store"
    configs = []
    for i, names in enumerate(CONFIGS):
        packages = {n: None for n in names}
        if i in (5, 6):
            packages["util"] = "{options: {flavor: spicy}}"
        configs.append(config(tmp_path, packages, recipes, store=store, modules=tmp_path / f"modules-{i % 2}",
                              name=f"site{i}.yml"))
    plans = [json.loads(run_cli("sync", "--dry-run", "--json", c).stdout)["artifacts"] for c in configs]
    wanted = {a["prefix"] for plan in plans for a in plan if a["kind"] == "package"}
    assert len({p for p in wanted if "/util/" in p}) == 2, "two flavors of util"
    assert not store.exists()

    procs = [subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", "-j", "2", "--progress", "plain",
                               c], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in configs]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert "Traceback" not in out

    built = collections.Counter(counter.read_text().split())
    assert set(built) == wanted, "every artifact of every plan was built"
    assert [p for p, n in built.items() if n != 1] == [], f"built more than once: {built}"
    assert any("waiting for a lock" in out for out in outputs), "the syncs really competed for build locks"
    for plan in plans:
        for a in plan:
            assert os.path.exists(os.path.join(a["prefix"], ".sitedist", "complete")), a
    code, out, _ = verify(configs[0])
    assert code == 0 and out["report"]["errors"] == [] and out["report"]["notes"] == [], out
    assert not os.listdir(store / ".sitedist" / "gcroots") or all(
        not n.startswith("inuse-") for n in os.listdir(store / ".sitedist" / "gcroots")), "every sync removed its root"
    assert os.listdir(store / ".sitedist" / "locks") == [], "every lock was released"

    # Each module tree is the complete tree of one of its publishers, and loads.
    for i in (0, 1):
        root = tmp_path / f"modules-{i}"
        manifest = json.load(open(root / "current" / "manifest.json"))
        # (host build tools get no module: admin_docs/build-tools.md)
        [j] = [j for j in range(i, 8, 2)
               if set(manifest["prefixes"]) == {a["prefix"] for a in plans[j] if a["kind"] != "tool"}]
        names = sorted(CONFIGS[j])
        r = ModuleShell.lmod(root / "lmod", home=tmp_path).run(f"module load {' '.join(names)}; " + "; ".join(names))
        assert r.stdout.split() == names, r.stdout
    # And no sync that runs again builds anything.
    for c in configs[:2]:
        assert "nothing to build" in run_cli("sync", c).stdout
