"""The Lmod spider cache refreshed in proportion to the change (``modules.lmod_cache``), with real Lmod: after
a publish that changed one package, Lmod evaluates that package's module name only and its entries are
spliced into the previous cache; the result is the file a full ``update_lmod_system_cache_files`` run writes
for the same tree, and what users see with it is the new tree. Anything the splice cannot vouch for falls
back to the full refresh, silently."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from modtools import LMOD_INIT, ModuleShell, make_prefix

from sitedist.modules import ModuleEntry, publish, rollback
from sitedist.modules.lmod_cache import CACHE, INDEX, LMODRC, refresh_lmod_cache

pytestmark = pytest.mark.skipif(not (os.path.isfile(LMOD_INIT) and shutil.which("lua5.3")),
                                reason="Lmod (and Lua 5.3) are not installed")

# Loads two cache files (text or compiled) and says whether they define the same tables
LUA_EQUAL = r"""
local function load(fn) local env = {}; assert(loadfile(fn, "bt", env))(); return env end
local function eq(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
local a, b = load(arg[1]), load(arg[2])
assert(next(a.spiderT) and next(b.spiderT), "no spiderT")
print(eq(a, b) and "EQUAL" or "DIFFERENT")
"""


def entry(store, name, version, build="1", **kw):
    aid = hashlib.sha256(f"{name}/{version}/{build}".encode()).hexdigest()[:32]
    prefix, subdirs = make_prefix(store, name, version, aid)
    return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=aid, subdirs=subdirs,
                       description=f"{name} {version} for tests", **kw)


def config(tmp_path, layout="flat"):
    # categories ('bio/samtools'), a default, hidden dependencies: each makes entries of its own in the cache
    return {"root": str(tmp_path / "modules"), "formats": ["lua", "tcl"], "layout": layout,
            "lmod_cache": str(tmp_path / "cache"), "defaults": {"tool": "1.0"},
            "naming": "{% if name.startswith('sam') %}bio/{% endif %}{{ name }}/{{ version }}"}


def stack(store):
    return [entry(store, "tool", "1.0"), entry(store, "tool", "2.0"), entry(store, "lib", "1.0", explicit=False),
            entry(store, "lib", "2.0"), entry(store, "samtools", "1.17"), entry(store, "samfix", "0.7", explicit=False),
            entry(store, "zz", "3")]


def full_refresh(tmp_path, modulepath):
    """The cache that Lmod's update_lmod_system_cache_files writes for the current tree (as before the splice)."""
    whole = tmp_path / "whole-cache"
    shutil.rmtree(whole, ignore_errors=True)
    assert not refresh_lmod_cache(str(whole), modulepath).spliced
    return whole


def lua_equal(a, b):
    out = subprocess.run(["lua5.3", "-", str(a), str(b)], input=LUA_EQUAL, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "EQUAL"


def assert_as_full_refresh(tmp_path, result):
    """The cache equals a full refresh's: byte for byte, and as the tables Lmod loads (the text and the
    compiled file)."""
    cache, whole = tmp_path / "cache", full_refresh(tmp_path, result.modulepath)
    assert (cache / CACHE).read_bytes() == (whole / CACHE).read_bytes()
    assert lua_equal(cache / CACHE, whole / CACHE)
    compiled = [p.name for p in whole.glob("spiderT.luac_*")]
    assert compiled, "update_lmod_system_cache_files compiles the cache"
    for name in compiled:
        assert lua_equal(cache / name, whole / CACHE), name


def shell(tmp_path, modulepath, cache=True):
    home = tmp_path / ("home-cache" if cache else "home-plain")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    return ModuleShell.lmod(modulepath, home, {"LMOD_RC": str(tmp_path / "cache" / LMODRC)} if cache else {})


def test_one_change_reevaluates_that_name_only_and_equals_a_full_refresh(tmp_path):
    store, cfg = tmp_path / "store", config(tmp_path)
    entries = stack(store)
    first = publish(entries, cfg)
    assert not first.lmod_cache["spliced"] and (tmp_path / "cache" / INDEX).is_file()
    # A modulefile put behind sitedist's back into a name that does not change: a refresh that re-evaluated
    # every name would list it; one that re-evaluates the changed name only does not
    tool = Path(os.path.realpath(tmp_path / "modules" / "lmod" / "tool"))
    stray = tool / "9.9.lua"
    os.chmod(tool, 0o755)
    stray.write_text((tool / "1.0.lua").read_text())
    try:
        entries[3] = entry(store, "lib", "2.0", build="2")   # lib 2.0 rebuilt
        entries.append(entry(store, "lib", "3.0"))           # and a new version of lib
        second = publish(entries, cfg)
        assert second.lmod_cache["spliced"] and second.lmod_cache["spidered"] == ["lib"], second.lmod_cache
        lua = second.modulepath["lua"]
        with_cache = shell(tmp_path, lua).run("module avail 2>&1; echo '<<SPIDER'; module spider lib 2>&1; "
                                              "module spider lib/3.0 2>&1; module load lib/3.0; snap loaded")
        avail, spider = with_cache.stdout.split("<<SPIDER")
        assert "lib/3.0" in avail and "lib/2.0" in avail and "bio/samtools/1.17" in avail
        assert "lib/3.0" in spider and "lib 3.0 for tests" in spider
        assert with_cache.snaps["loaded"]["LIB_ROOT"] == entries[-1].prefix
        assert "tool/9.9" not in avail, "the unchanged name was evaluated again"
        assert "tool/9.9" in shell(tmp_path, lua, cache=False).run("module avail 2>&1").stdout
    finally:
        stray.unlink()
    assert_as_full_refresh(tmp_path, second)

    # a name removed, a name added (in a category): spliced too
    entries = [e for e in entries if e.name != "zz"] + [entry(store, "samba", "4.1")]
    third = publish(entries, cfg)
    assert third.lmod_cache["spliced"] and third.lmod_cache["spidered"] == ["bio/samba"], third.lmod_cache
    assert_as_full_refresh(tmp_path, third)
    out = shell(tmp_path, third.modulepath["lua"]).run("module avail 2>&1").stdout
    assert "bio/samba/4.1" in out and "zz/3" not in out

    # another default, a version hidden: what the names' .modulerc.lua say changes
    entries[3] = entry(store, "lib", "2.0", build="2", explicit=False)
    fourth = publish(entries, {**cfg, "defaults": {"tool": "2.0"}})
    assert fourth.lmod_cache["spliced"] and fourth.lmod_cache["spidered"] == ["lib", "tool"], fourth.lmod_cache
    assert_as_full_refresh(tmp_path, fourth)
    out = shell(tmp_path, fourth.modulepath["lua"]).run("module avail 2>&1; module load tool; snap loaded")
    assert "lib/2.0" not in out.stdout and "lib/3.0" in out.stdout
    assert out.snaps["loaded"]["TOOL_ROOT"] == entries[1].prefix

    # a rollback switches back to an earlier tree: the names that differ are evaluated again
    assert rollback(cfg["root"]) == third.generation
    assert_as_full_refresh(tmp_path, third)
    assert rollback(cfg["root"]) == second.generation
    assert_as_full_refresh(tmp_path, second)
    out = shell(tmp_path, second.modulepath["lua"]).run("module avail 2>&1").stdout
    assert "zz/3" in out and "bio/samba" not in out


def test_the_full_refresh_runs_when_the_splice_cannot_be_trusted(tmp_path):
    store, cfg = tmp_path / "store", config(tmp_path)
    entries = stack(store)
    publish(entries, cfg)
    cache = tmp_path / "cache"

    def change(k):
        entries.append(entry(store, "tool", f"3.{k}"))
        return publish(entries, cfg)

    # the index is gone, or unreadable
    (cache / INDEX).unlink()
    result = change(0)
    assert not result.lmod_cache["spliced"] and "no index" in result.lmod_cache["reason"]
    assert_as_full_refresh(tmp_path, result)
    (cache / INDEX).write_text("{not json")
    result = change(1)
    assert not result.lmod_cache["spliced"]
    assert_as_full_refresh(tmp_path, result)
    assert change(2).lmod_cache["spliced"], "the full refresh indexes its cache for the next refresh"
    # the cache was rewritten by someone else (an admin running update_lmod_system_cache_files)
    subprocess.run(["/usr/bin/touch", str(cache / CACHE)], check=True)
    result = change(3)
    assert not result.lmod_cache["spliced"] and "not the file indexed" in result.lmod_cache["reason"]
    assert_as_full_refresh(tmp_path, result)
    # the last hidden module of the tree made visible: Lmod's text of an empty table is not spliced
    entries[:] = [e for e in entries if e.name != "samfix"]
    entries[2] = entry(store, "lib", "1.0")
    result = publish(entries, cfg)
    assert not result.lmod_cache["spliced"], result.lmod_cache
    assert_as_full_refresh(tmp_path, result)
    out = shell(tmp_path, result.modulepath["lua"]).run("module avail 2>&1").stdout
    assert "lib/1.0" in out and "tool/3.3" in out


def test_a_hierarchical_tree_is_spliced_for_packages_and_refreshed_whole_for_compilers(tmp_path):
    """In a hierarchical tree (Core, Compiler/<c>/<v>, MPI/<c>/<v>/<mpi>/<v>), a package rebuilt, added or
    removed at any level is spliced: Lmod evaluates that name only, at its level, and the cache equals a full
    refresh's; users see the new tree after loading the compiler and MPI. A compiler or MPI module (which
    opens a level) changed gets the full refresh."""
    store = tmp_path / "store"
    cfg = {**config(tmp_path, "hierarchical"), "naming": None, "defaults": {}}
    gcc, intel, ompi = ("gcc", "12.2.0"), ("intel", "2024"), ("openmpi", "4.1")
    entries = [entry(store, "gcc", "12.2.0", kind="compiler"), entry(store, "intel", "2024", kind="compiler"),
               entry(store, "cmake", "3.27"), entry(store, "ninja", "1.11", explicit=False),
               entry(store, "zlib", "1.3", compiler=gcc, explicit=False), entry(store, "zlib", "1.4", compiler=gcc),
               entry(store, "zlib", "1.3", build="i", compiler=intel, explicit=False),
               entry(store, "zlib", "1.4", build="i", compiler=intel),
               entry(store, "openmpi", "4.1", kind="mpi", compiler=gcc),
               entry(store, "hdf5", "1.14", compiler=gcc, mpi=ompi), entry(store, "fftw", "3.3", compiler=gcc, mpi=ompi)]
    first = publish(entries, cfg)
    assert not first.lmod_cache["spliced"] and (tmp_path / "cache" / INDEX).is_file()
    lua = first.modulepath["lua"]

    def change(*names):
        result = publish(entries, cfg)
        assert result.lmod_cache["spliced"] and result.lmod_cache["spidered"] == list(names), result.lmod_cache
        assert_as_full_refresh(tmp_path, result)
        return result

    # a package rebuilt at each level; the MPI level's with a new version beside it
    entries[2] = entry(store, "cmake", "3.27", build="2")
    change("Core/cmake")
    entries[5] = entry(store, "zlib", "1.4", build="2", compiler=gcc)
    change("Compiler/gcc/12.2/zlib")
    entries[9] = entry(store, "hdf5", "1.14", build="2", compiler=gcc, mpi=ompi)
    entries.append(entry(store, "hdf5", "1.15", compiler=gcc, mpi=ompi))
    # a modulefile put behind sitedist's back into an unchanged name of the same level: not evaluated
    fftw = Path(os.path.realpath(tmp_path / "modules" / "lmod" / "MPI" / "gcc" / "12.2" / "openmpi" / "4.1" / "fftw"))
    os.chmod(fftw, 0o755)
    (fftw / "9.9.lua").write_text((fftw / "3.3.lua").read_text())
    try:
        result = publish(entries, cfg)
        assert result.lmod_cache["spidered"] == ["MPI/gcc/12.2/openmpi/4.1/hdf5"], result.lmod_cache
        assert b"fftw/9.9" not in (tmp_path / "cache" / CACHE).read_bytes()
    finally:
        (fftw / "9.9.lua").unlink()
    assert_as_full_refresh(tmp_path, result)
    # a package removed, packages added at levels that exist, at Core and below it in one publish
    entries[:] = [e for e in entries if e.name != "fftw"]
    entries += [entry(store, "bzip2", "1.0", compiler=intel), entry(store, "scalapack", "2.2", compiler=gcc, mpi=ompi),
                entry(store, "ninja", "1.12")]
    change("Compiler/intel/2024/bzip2", "Core/ninja", "MPI/gcc/12.2/openmpi/4.1/scalapack")
    out = shell(tmp_path, lua).run("module load gcc openmpi; module avail 2>&1; echo '<<SPIDER'; "
                                   "module spider hdf5/1.15 2>&1; module spider bzip2/1.0 2>&1; "
                                   "module load hdf5/1.15; snap loaded")
    avail, spider = out.stdout.split("<<SPIDER")
    assert "scalapack/2.2" in avail and "hdf5/1.15" in avail and "zlib/1.4" in avail and "ninja/1.12" in avail
    assert "fftw" not in avail and "bzip2" not in avail, "bzip2 is intel's"
    assert "hdf5 1.15 for tests" in spider and "gcc/12.2.0  openmpi/4.1" in spider
    assert "intel/2024" in spider and "bzip2 1.0 for tests" in spider
    assert out.snaps["loaded"]["HDF5_ROOT"] == entries[10].prefix

    # a default at each level (the names' .modulerc.lua): spliced
    cfg["defaults"] = {"zlib": "1.3", "ninja": "1.11"}
    change("Compiler/gcc/12.2/zlib", "Compiler/intel/2024/zlib", "Core/ninja")
    out = shell(tmp_path, lua).run("module load gcc zlib ninja; snap loaded")
    assert out.snaps["loaded"]["ZLIB_ROOT"] == entries[4].prefix and out.snaps["loaded"]["NINJA_ROOT"] == entries[3].prefix

    # a module that opens a level changed (a compiler, an MPI): the full refresh; the next package change is
    # spliced again
    entries[1] = entry(store, "intel", "2024", build="2", kind="compiler")
    result = publish(entries, cfg)
    assert not result.lmod_cache["spliced"] and "Core/intel changes MODULEPATH" in result.lmod_cache["reason"]
    assert_as_full_refresh(tmp_path, result)
    entries[8] = entry(store, "openmpi", "4.1", build="2", kind="mpi", compiler=gcc)
    result = publish(entries, cfg)
    assert not result.lmod_cache["spliced"], result.lmod_cache
    assert "Compiler/gcc/12.2/openmpi changes MODULEPATH" in result.lmod_cache["reason"]
    assert_as_full_refresh(tmp_path, result)
    entries.append(entry(store, "mpich", "4.1", kind="mpi", compiler=gcc))   # a new MPI: a new level
    result = publish(entries, cfg)
    assert not result.lmod_cache["spliced"], result.lmod_cache
    assert_as_full_refresh(tmp_path, result)
    entries.append(entry(store, "zstd", "1.5", compiler=intel))
    change("Compiler/intel/2024/zstd")
    out = shell(tmp_path, lua).run("module load intel; module avail 2>&1").stdout
    assert "zstd/1.5" in out and "bzip2/1.0" in out


def test_text_that_looks_like_lmods_tables_is_spliced_as_text(tmp_path):
    """A description holding lines like the cache's own (closing braces, entries, Lua's long brackets and
    quotes) stays inside its string: the splice cuts only where Lmod's tables are."""
    store, cfg = tmp_path / "store", config(tmp_path)
    evil = 'evil\n    },\n  },\n}\nspiderT = {}\n]] ]=] "quoted [[ x\\" \n      ["lib/1.0"] = true,\n'
    entries = stack(store)
    entries[0] = ModuleEntry(**{**entries[0].__dict__, "description": evil})
    publish(entries, cfg)
    entries[4] = ModuleEntry(**{**entries[4].__dict__, "description": evil + "2"})
    entries[3] = entry(store, "lib", "2.0", build="2")
    result = publish(entries, cfg)
    assert result.lmod_cache["spliced"] and result.lmod_cache["spidered"] == ["bio/samtools", "lib"], result.lmod_cache
    assert_as_full_refresh(tmp_path, result)
    assert "]=] " in shell(tmp_path, result.modulepath["lua"]).run("module spider bio/samtools/1.17 2>&1").stdout
