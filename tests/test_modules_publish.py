"""Publishing in generations: atomic switches under a reader, incremental reuse, clashes that leave the
published tree untouched, rollback, pruning and GC roots, users' loaded environments across switches, the
Lmod spider cache, and site templates."""

import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modtools import LMOD_INIT, ModuleShell, em5_init, make_prefix, user_env  # noqa: F401

from sitedist.core import forked
from sitedist.core.generations import numbers as generation_numbers
from sitedist.errors import ModulesError
from sitedist.modules import (ModuleEntry, list_generations, live_prefixes, modulepath_lines, publish, rollback)

TOOLS = [("lmod", "lua"), ("lmod", "tcl"), ("em5", "tcl")]
# Run from another directory: the sitedist of this checkout, not an installed one.
REPUBLISH = (f"import pickle, sys\nsys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
             "from sitedist.modules import publish\npublish(*pickle.load(open(sys.argv[1], 'rb')))\n")


def aid(*parts):
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


class Store:
    def __init__(self, path):
        self.path = path

    def entry(self, name, version, tag="", **kw):
        a = aid(name, version, tag, kw.get("toolchain", ""))
        prefix, subdirs = make_prefix(self.path, name, version, a)
        return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=a, subdirs=subdirs, **kw)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store")


@pytest.fixture
def em5(request):
    if request.node.callspec.params["tool_fmt"][0] == "em5":
        return request.getfixturevalue("em5_init")
    return None


def config(tmp_path, **kw):
    return {"root": str(tmp_path / "modules"), "formats": ["lua", "tcl"], "layout": "flat", **kw}


def tree_checksum(root):
    """Digest of everything under root: names, symlink targets, file contents."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            h.update(path.encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                h.update(Path(path).read_bytes())
    return h.hexdigest()


def republish_command(tmp_path, name, entries, cfg):
    state = tmp_path / f"{name}.pkl"
    state.write_bytes(pickle.dumps((entries, cfg)))
    helper = tmp_path / "republish.py"
    helper.write_text(REPUBLISH)
    return f"{sys.executable} {helper} {state}"


def test_unchanged_inputs_publish_nothing_and_changes_reuse_unchanged_files(tmp_path, store):
    entries = [store.entry("zlib", "1.3"), store.entry("tool", "1.0"), store.entry("tool", "2.0")]
    cfg = config(tmp_path, defaults={"tool": "1.0"})
    first = publish(entries, cfg)
    assert (first.generation, first.changed, first.reused) == (1, True, 0)
    assert first.rendered == 3 * 2 + 2   # three modules and one .modulerc, in two formats
    assert (first.written_dirs, first.links) == (4, 4)   # zlib and tool, in two formats
    before = tree_checksum(tmp_path / "modules")
    again = publish(list(reversed(entries)), cfg)
    assert (again.generation, again.changed, again.rendered) == (1, False, 0)
    assert tree_checksum(tmp_path / "modules") == before

    content = tmp_path / "modules/content"
    old_dirs = set(os.listdir(content))
    changed = [entries[0], entries[1], store.entry("tool", "2.0", tag="rebuilt")]
    second = publish(changed, cfg)
    # only the changed name's directory is written (its two versions and .modulerc, in each format);
    # zlib's is linked from generation 1
    assert (second.generation, second.written_dirs, second.linked_dirs) == (2, 2, 2)
    assert (second.rendered, second.reused) == (6, 2)
    new_dirs = set(os.listdir(content)) - old_dirs
    assert len(new_dirs) == 2 and old_dirs <= set(os.listdir(content))
    g1, g2 = Path(first.path), Path(second.path)
    assert os.readlink(g1 / "lmod/zlib") == os.readlink(g2 / "lmod/zlib")
    assert os.path.basename(os.readlink(g2 / "tcl/tool")) in new_dirs
    assert os.path.basename(os.readlink(g2 / "lmod/tool")) in new_dirs
    assert os.stat(g1 / "lmod/zlib/1.3.lua").st_ino == os.stat(g2 / "lmod/zlib/1.3.lua").st_ino
    assert os.stat(g1 / "tcl/tool/2.0").st_ino != os.stat(g2 / "tcl/tool/2.0").st_ino
    assert changed[2].prefix in (g2 / "lmod/tool/2.0.lua").read_text()
    assert entries[2].prefix in (g1 / "lmod/tool/2.0.lua").read_text()   # generation 1 is untouched


def test_name_clash_is_an_error_naming_both_and_leaves_the_tree_untouched(tmp_path, store):
    cfg = config(tmp_path)
    publish([store.entry("zlib", "1.3")], cfg)
    before = tree_checksum(tmp_path / "modules")
    a = store.entry("hdf5", "1.14.0", toolchain="gcc-openmpi", options=(("mpi", "True"),))
    b = store.entry("hdf5", "1.14.0", toolchain="gcc-mpich", options=(("mpi", "True"),))
    with pytest.raises(ModulesError) as err:
        publish([store.entry("zlib", "1.3"), a, b], cfg)
    text = str(err.value)
    assert "hdf5/1.14.0" in text
    for e in (a, b):
        assert e.artifact_id in text and e.toolchain in text and "mpi=True" in text
    assert "'toolchain'" in text and "'hash'" in text and "'options'" not in text
    assert "unchanged" in text
    assert tree_checksum(tmp_path / "modules") == before

    # with the rule, both are published under told-apart names, and load
    result = publish([store.entry("zlib", "1.3"), a, b], {**cfg, "disambiguate": ["options", "toolchain"]})
    assert any("'toolchain'" in n and "hdf5/1.14.0-gcc-openmpi" in n for n in result.notes)
    sh = ModuleShell.lmod(result.modulepath["lua"], tmp_path)
    r = sh.run("module load hdf5/1.14.0-gcc-mpich; snap m; module load hdf5/1.14.0-gcc-openmpi; snap o")
    assert r.snaps["m"]["HDF5_ROOT"] == b.prefix and r.snaps["o"]["HDF5_ROOT"] == a.prefix


def test_rollback_switches_to_the_previous_generation(tmp_path, store):
    cfg = config(tmp_path, keep=3)
    v1 = [store.entry("app", "1.0", tag="a")]
    v2 = [store.entry("app", "1.0", tag="b")]
    first = publish(v1, cfg)
    publish(v2, cfg)
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path)
    assert sh.run("module load app; snap s").snaps["s"]["APP_ROOT"] == v2[0].prefix
    # the old generation, which shares nothing with the new one but the content nobody changed, still
    # loads the old build
    old = ModuleShell.lmod(f"{first.path}/lmod", tmp_path)
    assert old.run("module load app; snap s").snaps["s"]["APP_ROOT"] == v1[0].prefix
    assert rollback(cfg["root"]) == 1
    assert sh.run("module load app; snap s").snaps["s"]["APP_ROOT"] == v1[0].prefix
    assert [(g.number, g.current) for g in list_generations(cfg["root"])] == [(1, True), (2, False)]
    with pytest.raises(ModulesError, match="oldest"):
        rollback(cfg["root"])
    again = publish(v2, cfg)     # after a rollback, publishing the config again makes a new generation
    assert (again.generation, again.changed) == (3, True)
    assert sh.run("module load app; snap s").snaps["s"]["APP_ROOT"] == v2[0].prefix


def test_old_generations_are_pruned_and_kept_ones_are_gc_roots(tmp_path, store):
    cfg = config(tmp_path, keep=2)
    common = store.entry("zlib", "1.3")
    apps = [store.entry("app", "1.0", tag=str(i)) for i in range(4)]
    for i, app in enumerate(apps):
        result = publish([common, app], cfg)
    assert result.pruned == [2]
    assert [g.number for g in list_generations(cfg["root"])] == [3, 4]
    assert live_prefixes(cfg["root"]) == {common.prefix, apps[2].prefix, apps[3].prefix}
    # and generation 2's directory, kept as the spare the next publish starts from: not a GC root
    assert sorted(os.listdir(tmp_path / "modules/generations")) == [".spare", "3", "4"]
    assert not (tmp_path / "modules/generations/.spare/manifest.json").exists()
    # the content directories left are those the kept generations link: zlib's (shared by all four
    # generations) and apps 2 and 3's, in each format
    listed = set()
    for n in ("3", "4"):
        listed |= set(json.loads((tmp_path / "modules/generations" / n / "names.json").read_text()).values())
    assert set(os.listdir(tmp_path / "modules/content")) == listed and len(listed) == 2 * 3
    # and the symlinks kept for them (one each, every name being 3 levels below the root)
    assert sorted(os.listdir(tmp_path / "modules/links")) == sorted(f"{d}.3" for d in listed)


def test_a_publish_of_many_names_rendered_by_several_processes_is_the_same(tmp_path, store, monkeypatch):
    """Where a publish writes many content directories (a first publish, a template changed), forked
    processes render them (core.forked); the files are those one process writes, and text no modulefile
    can carry is refused as it is in one process, with the published tree left as it was."""
    publishing = importlib.import_module("sitedist.modules.publish")
    entries = [store.entry(f"p{i:03d}", "1.0", description=f"package {i}") for i in range(300)]
    cfg = config(tmp_path)
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    first = publish(entries, cfg)
    assert (first.written_dirs, first.rendered) == (600, 600) and 600 >= publishing._FORK_FROM
    assert len(forks) == forked.processes() - 1
    content = tmp_path / "modules/content"
    made = {d: tree_checksum(content / d) for d in os.listdir(content)}
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path)
    assert sh.run("module load p151 p298; snap s").snaps["s"]["P298_ROOT"] == entries[298].prefix

    # one process: the same directories, the same files
    monkeypatch.setattr(publishing, "_FORK_FROM", 10 ** 9)
    root = tmp_path / "modules"
    shutil.rmtree(root)
    forks.clear()
    publish(entries, cfg)
    assert not forks and {d: tree_checksum(content / d) for d in os.listdir(content)} == made

    # text no modulefile can carry, in a name a child renders (index 151: odd), refused from the child
    monkeypatch.setattr(publishing, "_FORK_FROM", 512)
    before = tree_checksum(root / "current/")
    bad = list(entries)
    bad[151] = store.entry("p151", "1.0", description="package\x1b]0;owned\x07")
    bad += [store.entry(f"q{i:03d}", "1.0") for i in range(300)]   # and 600 new directories
    with pytest.raises(ModulesError, match=r"module p151/1.0: its description .*change it in the recipe"):
        publish(bad, cfg)
    assert os.readlink(root / "current") == "generations/1"
    assert tree_checksum(root / "current/") == before
    assert sh.run("module load p151; snap s").snaps["s"]["P151_ROOT"] == entries[151].prefix


def test_generations_share_each_names_symlink_by_hard_links(tmp_path, store):
    """A generation's symlinks are hard links of the ones kept in links/: an unchanged name costs the new
    generation a directory entry, not an inode. Where the file system refuses a hard link, the generation
    gets plain symlinks, and loads the same."""
    cfg = config(tmp_path, formats=["lua"], keep=3)
    lib = store.entry("lib", "1.0")
    apps = [store.entry("app", "1.0", tag=str(i)) for i in range(4)]
    links = tmp_path / "modules/links"
    g1, g2 = (Path(publish([lib, app], cfg).path) for app in apps[:2])
    names = json.loads((g2 / "names.json").read_text())
    kept = links / f"{names['lmod/lib']}.3"
    assert os.lstat(g1 / "lmod/lib").st_ino == os.lstat(g2 / "lmod/lib").st_ino == os.lstat(kept).st_ino
    assert os.lstat(kept).st_nlink == 3 and os.readlink(kept) == f"../../../content/{names['lmod/lib']}"
    assert os.lstat(g1 / "lmod/app").st_ino != os.lstat(g2 / "lmod/app").st_ino
    # Refused: where lib's symlink is kept there is a directory, which link(2) refuses with EPERM (as it
    # refuses another admin's symlink under fs.protected_hardlinks=1)
    kept.unlink()
    kept.mkdir()
    g3 = Path(publish([lib, apps[2]], cfg).path)
    assert os.path.islink(g3 / "lmod/lib") and os.lstat(g3 / "lmod/lib").st_nlink == 1
    assert os.readlink(g3 / "lmod/lib") == os.readlink(g2 / "lmod/lib")
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path)
    r = sh.run("module load app lib; snap s")
    assert r.snaps["s"]["APP_ROOT"] == apps[2].prefix and r.snaps["s"]["LIB_ROOT"] == lib.prefix
    kept.rmdir()   # and once it is gone, the next generation is hard-linked again
    g4 = Path(publish([lib, apps[3]], cfg).path)
    assert os.lstat(g4 / "lmod/lib").st_ino == os.lstat(kept).st_ino != os.lstat(g3 / "lmod/lib").st_ino


def tree_links(generation):
    """A generation's trees as written: {path: symlink target} and the set of other entries (directories,
    anything else), relative to the generation, manifest, names.json and catalog left out."""
    links, other = {}, set()
    for dirpath, dirnames, filenames in os.walk(generation):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, generation)
            if rel.split(os.sep)[0] in ("catalog",) or rel in ("manifest.json", "names.json"):
                continue
            if os.path.islink(path):
                links[rel] = os.readlink(path)
            else:
                other.add(rel)
    return links, other


def expected_links(generation):
    """What a generation's names.json says its trees hold (names not inside another's directory)."""
    names = json.loads((Path(generation) / "names.json").read_text())
    return {key: "../" * (key.count("/") + 2) + f"content/{d}" for key, d in names.items()}


def test_a_publish_starts_from_the_pruned_generations_directory_and_corrects_it(tmp_path, store):
    """The generation a publish prunes keeps its directory as generations/.spare (no longer a generation,
    nor a GC root); the next publish takes it as its staging directory and changes only the links that
    differ. Whatever the spare holds (a link changed, removed or replaced, stray files and directories,
    another layout), the committed tree is exactly what names.json lists, and loads."""
    cfg = config(tmp_path, keep=1)
    libs = [store.entry(f"lib{i}", "1.0") for i in range(6)]
    apps = [store.entry("app", "1.0", tag=str(i)) for i in range(5)]
    publish(libs + [apps[0]], cfg)
    publish(libs + [apps[1]], cfg)   # prunes generation 1: its directory is the spare
    gens = tmp_path / "modules/generations"
    spare = gens / ".spare"
    assert spare.is_dir() and not (spare / "manifest.json").exists()
    assert live_prefixes(cfg["root"]) == {e.prefix for e in libs + [apps[1]]}   # not apps[0]'s

    third = publish(libs + [apps[2]], cfg)   # from generation 1's directory: only app's links differ
    assert (third.links, third.made_links) == (2 * 7, 2)
    links, other = tree_links(third.path)
    assert links == expected_links(third.path) and other == {"lmod", "tcl"}

    # the spare is now generation 2's directory: spoil it
    os.unlink(spare / "lmod/lib0")
    os.symlink("/etc", spare / "lmod/lib0")
    os.unlink(spare / "lmod/lib1")
    os.unlink(spare / "tcl/lib2")
    (spare / "tcl/lib2").mkdir()
    (spare / "tcl/lib2/1.0").write_text("#%Module\nsetenv OWNED 1\n")
    (spare / "lmod/stray.lua").write_text("setenv('OWNED', '1')\n")
    (spare / "lmod/junk/deeper").mkdir(parents=True)
    (spare / "stray-file").write_text("x")
    fourth = publish(libs + [apps[3]], cfg)
    assert fourth.made_links == 2 + 3   # app's two, and lib0, lib1 and lib2 where they were spoiled
    links, other = tree_links(fourth.path)
    assert links == expected_links(fourth.path) and other == {"lmod", "tcl"}
    assert not os.path.exists(os.path.join(fourth.path, "stray-file"))
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path)
    r = sh.run("module load lib0 lib1 lib2 app; snap s")
    assert r.snaps["s"]["LIB0_ROOT"] == libs[0].prefix and r.snaps["s"]["APP_ROOT"] == apps[3].prefix
    assert "OWNED" not in r.snaps["s"]

    # another layout: every link differs, and the flat tree's links are gone
    fifth = publish(libs + [apps[4]], {**cfg, "layout": "hierarchical"})
    assert fifth.made_links == fifth.links == 2 * 7
    links, other = tree_links(fifth.path)
    assert links == expected_links(fifth.path) and all(p.split(os.sep)[1] == "Core" for p in links)
    assert other == {"lmod", "tcl", "lmod/Core", "tcl/Core"}
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod/Core", tmp_path)
    assert sh.run("module load app lib5; snap s").snaps["s"]["APP_ROOT"] == apps[4].prefix


CRASH = ("import os, pickle, signal, sys\n"
         f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
         "import importlib\npublishing = importlib.import_module('sitedist.modules.publish')\n"
         "from sitedist.core.generations import Generations\n"
         "def kill(*a, **k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
         "if sys.argv[2] == 'commit':\n    Generations.commit = kill\n"
         "else:\n    publishing._switch = kill\n"
         "publishing.publish(*pickle.load(open(sys.argv[1], 'rb')))\n")


@pytest.mark.parametrize("moment", ["commit", "switch"])
def test_a_crash_between_writing_content_and_switching_leaves_the_tree_whole(tmp_path, store, moment):
    """SIGKILL after the new content directories are written, before the generation is committed
    ('commit') or before it is switched to ('switch'): users keep the old tree, and the next publish
    neither trusts nor keeps what the crash left."""
    cfg = config(tmp_path, formats=["lua"], keep=2)
    lib = store.entry("lib", "1.0")
    apps = {t: store.entry("app", "1.0", tag=t) for t in "abc"}
    publish([lib, apps["a"]], cfg)
    content = tmp_path / "modules/content"
    before = set(os.listdir(content))
    state = tmp_path / "b.pkl"
    state.write_bytes(pickle.dumps(([lib, apps["b"]], cfg)))
    helper = tmp_path / "crash.py"
    helper.write_text(CRASH)
    proc = subprocess.run([sys.executable, str(helper), str(state), moment], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = set(os.listdir(content)) - before
    assert len(left) == 1   # app's new directory, written and flushed, not linked by 'current'
    assert os.readlink(tmp_path / "modules/current") == "generations/1"
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path)
    assert sh.run("module load app; snap s").snaps["s"]["APP_ROOT"] == apps["a"].prefix
    # What the crash left is trusted only where a committed generation lists it ('switch': generation 2
    # was flushed and committed). Spoil it where none does, and publish again
    (leftover,) = left
    if moment == "commit":
        for name in os.listdir(content / leftover):
            (content / leftover / name).write_text("-- spoiled by a crash\n")
    second = publish([lib, apps["b"]], cfg)
    assert second.generation == (2 if moment == "commit" else 3)
    r = sh.run("module load app lib; snap s")
    assert r.snaps["s"]["APP_ROOT"] == apps["b"].prefix and r.snaps["s"]["LIB_ROOT"] == lib.prefix
    if moment == "commit":   # not listed by any generation: rewritten
        assert second.written_dirs == 1 and second.linked_dirs == 1
    third = publish([lib, apps["c"]], cfg)
    assert third.pruned
    listed = set()
    for n in map(str, generation_numbers(tmp_path / "modules/generations")):
        listed |= set(json.loads((tmp_path / "modules/generations" / n / "names.json").read_text()).values())
    assert set(os.listdir(content)) == listed   # nothing the crash left stays behind
    assert rollback(cfg["root"]) == second.generation   # and the kept one before it still loads
    assert sh.run("module load app; snap s").snaps["s"]["APP_ROOT"] == apps["b"].prefix


def test_modulepath_lines_name_the_stable_roots(tmp_path):
    assert modulepath_lines(config(tmp_path, layout="hierarchical")) == [
        f"module use {tmp_path}/modules/lmod/Core  # Lmod",
        f"module use {tmp_path}/modules/tcl/Core  # Environment Modules (or Lmod reading Tcl modulefiles)"]


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_users_loaded_modules_unload_cleanly_after_a_switch_and_prune(tmp_path, store, tool_fmt, em5):
    """A user loaded modules from generation 1; generation 2 changed their prefixes and generation 1 is
    pruned. Unloading still restores the environment, and loading again gives the new build."""
    tool, fmt = tool_fmt
    gcc_prefix, _ = make_prefix(store.path, "gcc", "12.2.0", "g", man=False, pkgconfig=False, include=False,
                                lib=False)
    gcc = ModuleEntry("gcc", "12.2.0", gcc_prefix, "g", kind="compiler", subdirs=("bin",))
    old, new = ([gcc, store.entry("app", "1.0", tag=t), store.entry("fftw", "3.3", tag=t, compiler=("gcc", "12.2.0"))]
                for t in ("old", "new"))
    cfg = config(tmp_path, layout="hierarchical", formats=[fmt], keep=1)
    result = publish(old, cfg)
    switch = republish_command(tmp_path, "new", new, cfg)
    sh = ModuleShell(LMOD_INIT if tool == "lmod" else em5, result.modulepath[fmt], tmp_path)
    r = sh.run(f"snap before; module load app gcc fftw; snap loaded\n"
               f"{switch}; test ! -e {tmp_path}/modules/generations/1\n"
               "module unload fftw app; snap unloaded; module load fftw app; snap reloaded; module purge; snap end")
    assert r.snaps["loaded"]["APP_ROOT"] == old[1].prefix and r.snaps["loaded"]["FFTW_ROOT"] == old[2].prefix
    unloaded = r.snaps["unloaded"]
    assert "APP_ROOT" not in unloaded and "FFTW_ROOT" not in unloaded
    assert old[1].prefix not in unloaded["PATH"] and old[2].prefix not in unloaded["PATH"]
    assert r.snaps["reloaded"]["APP_ROOT"] == new[1].prefix and r.snaps["reloaded"]["FFTW_ROOT"] == new[2].prefix
    assert user_env(r.snaps["end"]) == user_env(r.snaps["before"])


def _reader(sh, log, stop):
    script = (f"set +e\nwhile [ ! -e {stop} ]; do\n"
              "  out=$( { module load app && app && lib && echo \"root=$APP_ROOT\"; } 2>&1 ); rc=$?\n"
              f"  if [ $rc = 0 ]; then echo \"OK ${{out//$'\\n'/ }}\" >> {log}; "
              f"else echo \"FAIL $rc ${{out//$'\\n'/ }}\" >> {log}; fi\n"
              "done\n")
    env = sh.base_env()
    prelude = f"source {sh.init_file}\nexport MODULEPATH={sh.modulepath}\n"
    return subprocess.Popen(["bash", "--noprofile", "--norc", "-c", prelude + script], env=env, cwd=sh.home)


def _wait_for_lines(log, count, reader, timeout=60):
    """Wait until the reader has logged ``count`` lines (progress, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        assert reader.poll() is None, "the reader died"
        time.sleep(0.01)
    raise AssertionError(f"the reader made no progress: {log.read_text() if log.exists() else ''}")


@pytest.mark.parametrize("tool_fmt", [TOOLS[0], TOOLS[2]], ids=["lmod-lua", "em5-tcl"])
def test_reader_never_fails_while_generations_are_published(tmp_path, store, tool_fmt, em5):
    tool, fmt = tool_fmt
    lib = store.entry("lib", "1.0")
    apps = [store.entry("app", "1.0", tag=t, run_depends=(("lib", "1.0", lib.artifact_id),)) for t in "ab"]
    cfg = config(tmp_path, formats=[fmt], keep=3)
    result = publish([lib, apps[0]], cfg)
    sh = ModuleShell(LMOD_INIT if tool == "lmod" else em5, result.modulepath[fmt], tmp_path)
    log, stop = tmp_path / "reader.log", tmp_path / "stop"
    reader = _reader(sh, log, stop)
    try:
        _wait_for_lines(log, 1, reader)
        for i in range(1, 21):
            extra = [store.entry("extra", f"{i}.0")]   # every generation differs from the one before
            seen = len(log.read_text().splitlines())
            publish([lib, apps[i % 2], *extra], cfg)
            _wait_for_lines(log, seen + 1, reader)
    finally:
        stop.touch()
        reader.wait(60)
    lines = log.read_text().splitlines()
    assert [line for line in lines if not line.startswith("OK ")] == []
    assert len(lines) >= 21
    roots = {line.split("root=")[1] for line in lines}
    assert roots == {apps[0].prefix, apps[1].prefix}
    assert [g.number for g in list_generations(cfg["root"])] == [19, 20, 21]


def test_lmod_spider_cache_is_refreshed_after_each_publish(tmp_path, store):
    cache = tmp_path / "cache"
    rc = tmp_path / "lmodrc.lua"
    rc.write_text(f'scDescriptT = {{ {{ ["dir"] = "{cache}", ["timestamp"] = "{cache}/timestamp" }} }}\n')
    cfg = config(tmp_path, formats=["lua"])
    one, three = store.entry("tool", "1.0"), store.entry("tool", "3.0")
    publish([one], {**cfg, "lmod_cache": str(cache)})
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod", tmp_path, {"LMOD_RC": str(rc)})
    assert "tool/1.0" in sh.run("module spider tool 2>&1").stdout
    # without a refresh, Lmod's spider answers from the stale cache: the new version is missing
    publish([one, three], cfg)
    assert "tool/3.0" not in sh.run("module spider tool 2>&1").stdout
    # publishing the same inputs with the cache configured refreshes the stale cache
    result = publish([one, three], {**cfg, "lmod_cache": str(cache)})
    assert not result.changed
    assert "tool/3.0" in sh.run("module spider tool 2>&1").stdout


def test_site_templates_header_and_footer(tmp_path, store):
    site = tmp_path / "site-templates"
    site.mkdir()
    (site / "modulefile.lua.j2").write_text(
        '{% extends "builtin/modulefile.lua.j2" %}\n'
        '{% block footer %}{{ super() }}setenv("SITE_MARK", {{ (name ~ "@" ~ version) | lua }})\n{% endblock %}\n')
    entries = [store.entry("tool", "1.0")]
    cfg = config(tmp_path, templates=str(site), header="Site: Example HPC\nHelp: hpc@example.org",
                 footer="end of file")
    result = publish(entries, cfg)
    lua = (Path(result.path) / "lmod/tool/1.0.lua").read_text()
    tcl = (Path(result.path) / "tcl/tool/1.0").read_text()
    assert "-- Site: Example HPC\n-- Help: hpc@example.org\n" in lua and "-- end of file\n" in lua
    assert "# Site: Example HPC\n# Help: hpc@example.org\n" in tcl and "# end of file\n" in tcl
    sh = ModuleShell.lmod(result.modulepath["lua"], tmp_path)
    assert sh.run("module load tool; snap s").snaps["s"]["SITE_MARK"] == "tool@1.0"
    # changing a site template is a change: everything is rendered again
    (site / "modulefile.lua.j2").write_text('{% extends "builtin/modulefile.lua.j2" %}\n')
    again = publish(entries, cfg)
    assert again.changed and again.rendered == 2 and again.reused == 0
    assert "SITE_MARK" not in (Path(again.path) / "lmod/tool/1.0.lua").read_text()


def test_tree_is_readable_by_users_whatever_the_publishers_umask(tmp_path, store):
    old = os.umask(0o077)
    try:
        result = publish([store.entry("tool", "1.0")], config(tmp_path))
    finally:
        os.umask(old)
    assert os.stat(Path(result.path) / "lmod/tool/1.0.lua").st_mode & 0o777 == 0o644
    for d in ("lmod/tool", "lmod", "", "..", "../../content"):
        assert os.stat(Path(result.path) / d).st_mode & 0o777 == 0o755, d


def test_a_module_name_inside_another_ones_directory(tmp_path, store):
    """Names 'app' and 'app/sub' (modules.naming may put '/' in a name): app's content directory holds a
    link to app/sub's, so that a change to app/sub alone still gives a new app directory, and both load."""
    naming = "{{ name }}{{ '/sub' if toolchain else '' }}/{{ version }}"
    cfg = config(tmp_path, formats=["lua"], naming=naming)
    app = store.entry("app", "1.0")
    subs = [store.entry("app", "2.0", tag=t, toolchain="tc") for t in "ab"]
    first = publish([app, subs[0]], cfg)
    g1 = Path(first.path)
    assert os.path.islink(g1 / "lmod/app") and os.path.islink(g1 / "lmod/app/sub")
    assert (first.written_dirs, first.links) == (2, 1)
    second = publish([app, subs[1]], cfg)
    g2 = Path(second.path)
    assert second.written_dirs == 2   # app/sub's, and app's that links it
    assert os.readlink(g1 / "lmod/app") != os.readlink(g2 / "lmod/app")
    assert (g1 / "lmod/app/1.0.lua").read_text() == (g2 / "lmod/app/1.0.lua").read_text()
    assert subs[0].prefix in (g1 / "lmod/app/sub/2.0.lua").read_text()
    assert subs[1].prefix in (g2 / "lmod/app/sub/2.0.lua").read_text()
    sh = ModuleShell.lmod(second.modulepath["lua"], tmp_path)
    r = sh.run("module load app/sub/2.0; snap s; module purge; module load app/1.0; snap t")
    assert r.snaps["s"]["APP_ROOT"] == subs[1].prefix and r.snaps["t"]["APP_ROOT"] == app.prefix


def test_compiled_templates_are_kept_only_where_nobody_else_may_write(tmp_path, store):
    """Jinja2's compiled templates (code, run by the publisher) are kept for the next publish in a
    directory only the publisher may write to; in one that others may write to, they are not used."""
    cfg = config(tmp_path, formats=["lua"])
    publish([store.entry("a", "1.0")], cfg)
    cache = tmp_path / "modules/.compiled-templates"
    assert os.stat(cache).st_mode & 0o777 == 0o700 and list(cache.iterdir())
    for f in cache.iterdir():
        f.unlink()
    os.chmod(cache, 0o777)
    publish([store.entry("a", "2.0")], cfg)
    assert list(cache.iterdir()) == []
