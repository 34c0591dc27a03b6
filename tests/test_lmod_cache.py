"""Lmod's system spider cache (``modules.lmod_cache``) with real Lmod: after a publish and after a rollback
Lmod answers from the cache sitedist wrote (not from a walk of the tree), and what users get from
``module avail``, ``module spider`` and ``module load`` is the same with the cache, with cached loads and
without the cache."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from modtools import LMOD_INIT, ModuleShell, make_prefix

from sitedist.modules import ModuleEntry, publish, rollback
from sitedist.modules.lmod_cache import LMODRC

pytestmark = pytest.mark.skipif(not os.path.isfile(LMOD_INIT), reason="Lmod is not installed")


def entry(store, name, version, **kw):
    aid = hashlib.sha256(f"{name}/{version}".encode()).hexdigest()[:32]
    prefix, subdirs = make_prefix(store, name, version, aid)
    return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=aid, subdirs=subdirs,
                       description=f"{name} for tests", **kw)


def shells(tmp_path, modulepath, rc):
    """Lmod with the cache, with the cache and cached loads, and without it; each with a HOME of its own
    (Lmod keeps a user cache there)."""
    out = {}
    for label, env in [("cache", {"LMOD_RC": str(rc)}), ("cached loads", {"LMOD_RC": str(rc), "LMOD_CACHED_LOADS": "yes"}),
                       ("no cache", {})]:
        home = tmp_path / f"home-{label.replace(' ', '-')}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        out[label] = ModuleShell.lmod(modulepath, home, env)
    return out


def answers(sh):
    r = sh.run("module avail 2>&1; echo '<<SPIDER'; module spider tool 2>&1; module spider lib/1.0 2>&1; "
               "module load tool lib; snap loaded; module -t list 2>&1")
    env = {k: v for k, v in r.snaps["loaded"].items()
           if k not in ("HOME", "PWD", "OLDPWD") and not k.startswith(("_ModuleTable", "__LMOD", "LMOD_"))}
    return r.stdout, env


def stray_module(generation_dir):
    """A modulefile put into the published tree behind sitedist's back (and so behind the cache's)."""
    tool = Path(generation_dir) / "lmod" / "tool"
    stray = tool / "9.9.lua"
    os.chmod(tool, 0o755)
    stray.write_text((tool / "1.0.lua").read_text())
    return stray


def test_lmod_answers_from_the_cache_after_publish_and_rollback(tmp_path):
    store = tmp_path / "store"
    cache = tmp_path / "cache"
    cfg = {"root": str(tmp_path / "modules"), "formats": ["lua"], "layout": "flat", "lmod_cache": str(cache)}
    first = [entry(store, "tool", "1.0"), entry(store, "lib", "1.0")]
    second = first + [entry(store, "tool", "2.0")]
    publish(first, cfg)
    result = publish(second, cfg)
    rc = cache / LMODRC
    assert rc.is_file(), "the publish writes the lmodrc.lua that names the cache"

    for step in ("publish", "rollback"):
        by = shells(tmp_path, result.modulepath["lua"], rc)
        seen = {label: answers(sh) for label, sh in by.items()}
        # the same answers with the cache, with cached loads and without the cache
        assert seen["cache"] == seen["cached loads"] == seen["no cache"], step
        out, env = seen["cache"]
        versions = ["1.0", "2.0"] if step == "publish" else ["1.0"]
        assert f"tool/{versions[-1]}" in out.split("<<SPIDER")[0]
        assert ("tool/2.0" in out) == (step == "publish"), out
        assert env["TOOL_ROOT"] == entry(store, "tool", versions[-1]).prefix, step
        # Lmod answers from the cache, not from the tree: a module added behind the cache's back is not
        # seen with the cache, and is seen without it (so a cache that Lmod ignored fails here)
        stray = stray_module(os.path.realpath(tmp_path / "modules" / "current"))
        try:
            assert "tool/9.9" in by["no cache"].run("module avail tool 2>&1").stdout
            assert by["no cache"].run("module load tool/9.9").returncode == 0
            # cached loads find modules in the cache alone
            assert by["cached loads"].run("module load tool/9.9", check=False).returncode != 0, step
            for label in ("cache", "cached loads"):
                assert "tool/9.9" not in by[label].run("module avail tool 2>&1; module spider tool 2>&1").stdout, \
                    (step, label)
        finally:
            stray.unlink()
        if step == "publish":
            assert rollback(cfg["root"]) == 1


def test_lmod_answers_from_the_cache_at_every_level_of_a_hierarchy(tmp_path):
    """The cache of a hierarchical tree covers the levels that a compiler module opens: Lmod answers from it
    there too (the cache's keys are the directories the modules add to MODULEPATH)."""
    store = tmp_path / "store"
    cache = tmp_path / "cache"
    gcc = ("gcc", "12.2.0")
    entries = [entry(store, "gcc", "12.2.0", kind="compiler"), entry(store, "tool", "1.0"),
               entry(store, "zlib", "1.3", compiler=gcc)]
    cfg = {"root": str(tmp_path / "modules"), "formats": ["lua"], "layout": "hierarchical",
           "lmod_cache": str(cache)}
    result = publish(entries, cfg)
    by = shells(tmp_path, result.modulepath["lua"], cache / LMODRC)
    script = "module load gcc; module avail 2>&1; module load zlib; snap loaded"
    seen = {label: by[label].run(script) for label in ("cache", "no cache")}
    assert seen["cache"].stdout == seen["no cache"].stdout
    assert "zlib/1.3" in seen["cache"].stdout and "tool/1.0" in seen["cache"].stdout
    assert seen["cache"].snaps["loaded"]["ZLIB_ROOT"] == entries[2].prefix
    level = Path(os.path.realpath(tmp_path / "modules" / "current")) / "lmod" / "Compiler" / "gcc" / "12.2"
    stray = level / "zlib" / "9.9.lua"
    stray.write_text((level / "zlib" / "1.3.lua").read_text())
    assert "zlib/9.9" in by["no cache"].run("module load gcc; module avail zlib 2>&1").stdout
    assert "zlib/9.9" not in by["cache"].run("module load gcc; module avail zlib 2>&1").stdout


def test_a_cache_without_its_lmodrc_is_refreshed_by_the_next_publish(tmp_path):
    """A cache written before sitedist wrote lmodrc.lua beside it counts as stale: publishing the same
    inputs again refreshes it and writes the file."""
    store = tmp_path / "store"
    cache = tmp_path / "cache"
    cfg = {"root": str(tmp_path / "modules"), "formats": ["lua"], "layout": "flat", "lmod_cache": str(cache)}
    entries = [entry(store, "tool", "1.0")]
    publish(entries, cfg)
    (cache / LMODRC).unlink()
    assert not publish(entries, cfg).changed
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path, {"LMOD_RC": str(cache / LMODRC)})
    assert "valid: true" in sh.run("module -D avail 2>&1").stdout
