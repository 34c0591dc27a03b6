"""Version order (issue 11 item 7, issue 10 point 3): one tested ordering for a recipe's default
version, the default compiler and module defaults."""

import random
import types

import pytest

from sitedist.core.versions import is_prerelease, newest, version_key

# Each chain is strictly increasing.
CHAINS = {
    "numbers": ["0.9", "1.0", "1.0.1", "1.0.8", "1.2", "1.9", "1.10", "2.9", "2.10", "10.0"],
    "pre-releases": ["1.0.dev1", "1.0a1", "1.0alpha2", "1.0b1", "1.0beta2", "1.0rc1", "1.0-rc2", "1.0rc10",
                     "1.0", "1.0.1rc1", "1.0.1"],
    "rc then final": ["2.0rc1", "2.0"],
    "beta then final": ["1.14.0-beta", "1.14.0"],
    "dash rc": ["3.4.4-rc2", "3.4.4"],
    "post-releases": ["1.0", "1.0.post1", "1.0.post2", "1.0.1"],
    "patch levels": ["1.0", "1.0-p1", "1.0-p2", "1.1"],
    "letters": ["5.4.1", "5.4.1a", "5.4.1b", "5.4.2"],
    "openssl letters": ["1.1.1", "1.1.1k", "1.1.1w", "3.0.0"],
    "distribution suffixes": ["1.2.12", "1.2.13", "1.2.13.dfsg", "1.2.14"],
    "dates": ["2023.10", "2024.01", "2024.05", "2024.10", "20250101"],
    "tilde": ["1.0~rc1", "1.0"],
    "branches": ["99.0", "stable", "master", "main", "develop"],
    "case": ["1.0RC1", "1.0"],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chains_are_increasing(name):
    chain = CHAINS[name]
    for a, b in zip(chain, chain[1:]):
        assert version_key(a) < version_key(b), f"{a} should sort below {b}"
    shuffled = chain[:]
    random.Random(4).shuffle(shuffled)
    assert sorted(shuffled, key=version_key) == chain
    finals = [v for v in chain if not is_prerelease(v) and v not in ("stable", "master", "main", "develop")]
    assert newest(shuffled) == finals[-1]


def test_the_default_is_the_newest_release_unless_there_is_none():
    assert newest(["2.0", "2.1-beta", "2.1rc1", "develop"]) == "2.0"
    assert newest(["2.1-beta", "2.1rc1"]) == "2.1rc1"
    assert newest(["main", "develop"]) == "develop"


def test_the_issues_cases():
    assert newest(["2.0rc1", "2.0"]) == "2.0"
    assert newest(["1.14.0-beta", "1.14.0"]) == "1.14.0"
    assert newest(["1.2.13.dfsg", "2.10", "1.0.8", "2024.05", "3.4.4-rc2", "5.4.1a"]) == "2024.05"


def test_prerelease_detection():
    assert all(is_prerelease(v) for v in ["2.0rc1", "1.14.0-beta", "1.0a1", "1.0.dev0", "3.4.4-rc2", "1.0~pre"])
    assert not any(is_prerelease(v) for v in ["2.0", "5.4.1a", "1.2.13.dfsg", "1.0.post1", "2024.05", "rc1"])


def test_the_order_is_total_and_deterministic():
    versions = [v for chain in CHAINS.values() for v in chain] + ["1.0-rc1", "1.0.rc1", "1_0", "1-0"]
    keys = [version_key(v) for v in versions]
    assert len(set(keys)) == len(set(versions)), "two different versions compare equal"
    once = sorted(set(versions), key=version_key)
    for seed in range(5):
        again = list(set(versions))
        random.Random(seed).shuffle(again)
        assert sorted(again, key=version_key) == once


def test_a_recipe_defaults_to_its_newest_final_release(tmp_path):
    from sitedist.spec.recipe import load_recipe

    from conftest import write

    recipe = load_recipe(write(tmp_path / "pkg.yml", """
        name: pkg
        versions: {"2.0rc1": {path: .}, "2.0": {path: .}, "1.9": {path: .}, "2.1-beta": {path: .}}
        build: commands
        commands: ['true']
        """))
    assert recipe.newest == "2.0", "a pre-release of a newer version must not become the default either"


def test_the_default_compiler_is_the_newest_final_release():
    from sitedist.host.probe import Compiler
    from sitedist.host.toolchains import _compiler_package, resolve_toolchains

    def gcc(version):
        return _compiler_package(Compiler(name="gcc", version=version, prefix=f"/opt/gcc-{version}",
                                          cc=f"/opt/gcc-{version}/bin/gcc", cxx=None, fc=None, languages=("c",),
                                          triple="x86_64-linux-gnu"))
    config = types.SimpleNamespace(host={}, toolchains={}, where=lambda *a: "site.yml:1")
    packages = {"gcc@12.2.0rc1": gcc("12.2.0rc1"), "gcc": gcc("12.2.0"), "gcc@12.1.0": gcc("12.1.0")}
    assert resolve_toolchains(config, packages)["default"].compiler.version == "12.2.0"
    config.host = {"default_compiler": "gcc@12.2"}
    assert resolve_toolchains(config, packages)["default"].compiler.version == "12.2.0"


def test_a_module_with_a_release_candidate_defaults_to_the_final_release():
    from sitedist.modules import ModuleEntry, plan_tree

    def entry(version):
        return ModuleEntry(name="tool", version=version, prefix=f"/store/tool/{version}-x", artifact_id=version * 4)
    plan = plan_tree([entry("2.0rc1"), entry("2.0"), entry("1.9")], {})
    assert plan.defaults == {("", "tool"): "2.0"}
    assert plan.rc_dirs()[("", "tool")][0] == "tool/2.0"
    # Without a pre-release the module system's own order is left alone; a configured default wins.
    assert plan_tree([entry("2.0"), entry("1.9")], {}).defaults == {}
    assert plan_tree([entry("2.0rc1"), entry("2.0")], {"defaults": {"tool": "2.0rc1"}}).defaults == \
        {("", "tool"): "2.0rc1"}
