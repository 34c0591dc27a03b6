"""CPU targets: the target enters the hash, a non-generic target's flags reach the compiler, and with
several targets each gets its own artifacts and its own module tree."""

import gzip
import json
import os

from conftest import run_cli, site_config
from modtools import ModuleShell


def test_two_targets_two_artifacts_two_module_trees(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra=f"""
target: [generic, x86_64_v2]
modules: {{root: {tmp_path}/modules, formats: [lua]}}
""")
    run_cli("sync", config)
    arts = [a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]
            if a["name"] == "zlib"]
    assert len(arts) == 2 and arts[0]["id"] != arts[1]["id"]
    logs = {}
    for a in arts:
        spec = json.load(open(os.path.join(a["prefix"], ".sitedist", "spec.json")))
        with gzip.open(os.path.join(a["prefix"], ".sitedist", "build.log.gz"), "rt") as f:
            logs[spec["doc"]["target"]] = f.read()
    assert set(logs) == {"x86_64", "x86_64_v2"}
    assert "-march=x86-64-v2" in logs["x86_64_v2"] and "-march=" not in logs["x86_64"]
    for target in ("x86_64", "x86_64_v2"):
        tree = tmp_path / "modules" / target / "lmod"
        r = ModuleShell.lmod(str(tree), tmp_path).run("module load zlib; snap s")
        prefix = next(a["prefix"] for a in arts if json.load(
            open(os.path.join(a["prefix"], ".sitedist", "spec.json")))["doc"]["target"] == target)
        assert r.snaps["s"]["ZLIB_ROOT"] == prefix


def test_unknown_target_is_a_config_error(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra="target: skylkae\n")
    proc = run_cli("sync", "--dry-run", config, check=False)
    assert proc.returncode == 2 and "skylkae" in proc.stderr and "skylake" in proc.stderr, proc.stderr
    assert f"{config}:6" in proc.stderr
