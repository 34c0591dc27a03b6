"""Flat module trees loaded by real Lmod (Lua and Tcl trees) and real Environment Modules 5 (Tcl tree)."""

import hashlib
import subprocess

import pytest
from modtools import ModuleShell, em5_init, make_prefix, tree_files, user_env, TCLINT  # noqa: F401  (em5_init is a fixture)

from sitedist.errors import ModulesError
from sitedist.modules import ModuleEntry, publish

TOOLS = [("lmod", "lua"), ("lmod", "tcl"), ("em5", "tcl")]


def aid(*parts):
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def package(store, name, version, **kw):
    a = aid(name, version, kw.get("toolchain", ""), repr(kw.get("options", ())))
    prefix, subdirs = make_prefix(store, name, version, a)
    return ModuleEntry(name=name, version=version, prefix=prefix, artifact_id=a, subdirs=subdirs, **kw)


@pytest.fixture
def stack(tmp_path):
    """A small stack: an implicit zlib (a dependency) beside an explicit newer one, hdf5 needing the old
    zlib and asking for env settings, two versions of a tool with a default, names that need mangling,
    and a real compiled C program."""
    store = tmp_path / "store"
    zlib_old = package(store, "zlib", "1.2.13", explicit=False, description="Compression library",
                       homepage="https://zlib.net")
    zlib_new = package(store, "zlib", "1.3", description="Compression library")
    hdf5 = package(store, "hdf5", "1.14.0", description='HDF5 "hierarchical" data [format] $lib',
                   run_depends=(("zlib", "1.2.13", zlib_old.artifact_id),),
                   env=(("set", "HDF5_PLUGIN_PATH", "{prefix}/lib/plugin"), ("prepend", "HDF5_DIRS", "{prefix}/a"),
                        ("append", "HDF5_DIRS", "{prefix}/z"), ("set", "HDF5_FLAVOUR", "plain text")))
    tools = [package(store, "tool", v) for v in ("1.0", "2.0")]
    odd = [package(store, "libfoo-bar.baz", "0.1"), package(store, "gtk+", "3.24")]
    hello_aid = aid("hello", "1.0")
    prefix, subdirs = make_prefix(store, "hello", "1.0", hello_aid, programs=["hello-script"])
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n')
    subprocess.run(["gcc", "-O1", str(src), "-o", f"{prefix}/bin/hello"], check=True)
    hello = ModuleEntry(name="hello", version="1.0", prefix=prefix, artifact_id=hello_aid, subdirs=subdirs)
    return [zlib_old, zlib_new, hdf5, *tools, *odd, hello]


def tree_of(tmp_path, entries, fmt, **config):
    config = {"root": str(tmp_path / "modules"), "formats": [fmt], "layout": "flat",
              "defaults": {"tool": "1.0"}, **config}
    result = publish(entries, config)
    return result.modulepath[fmt]


def shell(tool, fmt, tree, tmp_path, em5):
    if tool == "em5":
        return ModuleShell(em5, tree, tmp_path)
    return ModuleShell.lmod(tree, tmp_path)


@pytest.fixture
def em5(request):
    """The EM5 init file, only for the parameters that need it."""
    if request.node.callspec.params.get("tool_fmt", ("",))[0] == "em5":
        return request.getfixturevalue("em5_init")
    return None


ROOT_VARS = {"zlib": "ZLIB_ROOT", "hdf5": "HDF5_ROOT", "tool": "TOOL_ROOT", "libfoo-bar.baz": "LIBFOO_BAR_BAZ_ROOT",
             "gtk+": "GTK__ROOT", "hello": "HELLO_ROOT"}


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_each_module_loads_runs_and_unloads_exactly(tmp_path, stack, tool_fmt, em5):
    tool, fmt = tool_fmt
    sh = shell(tool, fmt, tree_of(tmp_path, stack, fmt), tmp_path, em5)
    explicit = [e for e in stack if e.explicit]
    script = []
    for i, e in enumerate(explicit):
        prog = "hello" if e.name == "hello" else e.name
        script.append(f"snap before{i}; module load {e.name}/{e.version}; snap loaded{i}\n"
                      f"echo RUN{i}: $({prog}); echo MAN{i}: $(man -w {e.name} 2>/dev/null || true)\n"
                      f"echo PC{i}: $(pkg-config --modversion {e.name})\n"
                      f"module unload {e.name}; snap after{i}")
    r = sh.run("\n".join(script))
    for i, e in enumerate(explicit):
        loaded = r.snaps[f"loaded{i}"]
        assert loaded[ROOT_VARS[e.name]] == e.prefix
        assert loaded["PATH"].split(":")[0] == f"{e.prefix}/bin"
        assert f"{e.prefix}/share/man" in loaded["MANPATH"].split(":")
        assert f"{e.prefix}/lib/pkgconfig" in loaded["PKG_CONFIG_PATH"].split(":")
        assert e.prefix in loaded["CMAKE_PREFIX_PATH"].split(":")
        assert "LD_LIBRARY_PATH" not in loaded
        expected = "hello from C" if e.name == "hello" else f"{e.name} {e.version} {e.artifact_id}"
        assert f"RUN{i}: {expected}\n" in r.stdout
        assert f"MAN{i}: {e.prefix}/share/man/man1/{e.name}.1\n" in r.stdout
        assert f"PC{i}: {e.version}\n" in r.stdout
        assert user_env(r.snaps[f"after{i}"]) == user_env(r.snaps[f"before{i}"]), e.name


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_dependencies_recipe_env_defaults_and_hidden(tmp_path, stack, tool_fmt, em5):
    tool, fmt = tool_fmt
    sh = shell(tool, fmt, tree_of(tmp_path, stack, fmt), tmp_path, em5)
    zlib_old, zlib_new, hdf5 = stack[:3]
    r = sh.run("snap before; module load hdf5; snap loaded; module unload hdf5; snap after\n"
               "module load tool; snap tool; module purge\n"
               "module load zlib; snap zlib; module purge\n"
               "echo AVAIL: $(module -t avail 2>&1 | tr '\\n' ' ')")
    loaded = r.snaps["loaded"]
    # hdf5 loads the zlib it was built with, although a newer one exists and the old one is hidden
    assert loaded["ZLIB_ROOT"] == zlib_old.prefix
    assert loaded["PATH"].split(":")[:2] == [f"{hdf5.prefix}/bin", f"{zlib_old.prefix}/bin"]
    assert loaded["HDF5_PLUGIN_PATH"] == f"{hdf5.prefix}/lib/plugin"
    assert loaded["HDF5_DIRS"] == f"{hdf5.prefix}/a:{hdf5.prefix}/z"
    assert loaded["HDF5_FLAVOUR"] == "plain text"
    # unloading hdf5 unloads the dependency it loaded, and restores everything
    assert "ZLIB_ROOT" not in r.snaps["after"]
    assert user_env(r.snaps["after"]) == user_env(r.snaps["before"])
    # the configured default wins over the highest version; the hidden zlib is not the default
    assert r.snaps["tool"]["TOOL_ROOT"] == stack[3].prefix
    assert r.snaps["zlib"]["ZLIB_ROOT"] == zlib_new.prefix
    avail = r.stdout.split("AVAIL:")[1].split()
    assert any(a.startswith("zlib/1.3") for a in avail)
    assert not any(a.startswith("zlib/1.2.13") for a in avail)
    assert any(a.startswith("hdf5/1.14.0") for a in avail)
    # a hidden module still loads by its full name
    r = sh.run("module load zlib/1.2.13; snap z")
    assert r.snaps["z"]["ZLIB_ROOT"] == zlib_old.prefix


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_one_version_of_a_module_at_a_time(tmp_path, stack, tool_fmt, em5):
    tool, fmt = tool_fmt
    sh = shell(tool, fmt, tree_of(tmp_path, stack, fmt), tmp_path, em5)
    tool1, tool2 = stack[3], stack[4]
    if tool == "lmod":   # Lmod swaps modules of one name by itself
        r = sh.run("module load tool/2.0; module load tool/1.0; snap s; echo LIST: $(module -t list 2>&1)")
        assert r.snaps["s"]["TOOL_ROOT"] == tool1.prefix
        assert f"{tool2.prefix}/bin" not in r.snaps["s"]["PATH"]
    else:                # Environment Modules: the Tcl modulefile's 'conflict' refuses; 'switch' swaps
        r = sh.run("module load tool/2.0; snap a; module load tool/1.0", check=False)
        assert r.returncode != 0 and "conflict" in r.stderr.lower()
        assert r.snaps["a"]["TOOL_ROOT"] == tool2.prefix
        r = sh.run("module load tool/2.0; module switch tool/2.0 tool/1.0; snap s")
        assert r.snaps["s"]["TOOL_ROOT"] == tool1.prefix
        assert f"{tool2.prefix}/bin" not in r.snaps["s"]["PATH"]


def test_help_and_whatis_describe_the_artifact(tmp_path, stack):
    sh = ModuleShell.lmod(tree_of(tmp_path, stack, "lua"), tmp_path)
    hdf5 = stack[2]
    r = sh.run("module help hdf5; module whatis hdf5")
    text = r.stdout + r.stderr
    for needle in ('HDF5 "hierarchical" data [format] $lib', "1.14.0", hdf5.artifact_id, hdf5.prefix,
                   "Name: hdf5", "Version: 1.14.0"):
        assert needle in text
    r = sh.run("module whatis zlib/1.3")
    assert "Description: Compression library" in r.stdout + r.stderr


def test_recipe_asking_for_ld_library_path_is_refused(tmp_path, stack):
    bad = ModuleEntry(name="bad", version="1", prefix=str(tmp_path / "store/bad/1-x"), artifact_id="x",
                      env=(("prepend", "LD_LIBRARY_PATH", "{prefix}/lib"),))
    with pytest.raises(ModulesError, match="LD_LIBRARY_PATH"):
        publish(stack + [bad], {"root": str(tmp_path / "modules"), "formats": ["lua"]})
    assert not (tmp_path / "modules" / "current").exists()


def test_flat_trees_pass_lmod_syntax_check_and_tclint(tmp_path, stack):
    config = {"root": str(tmp_path / "modules"), "formats": ["lua", "tcl"], "defaults": {"tool": "1.0"},
              "header": "Site: test cluster", "footer": "end"}
    result = publish(stack, config)
    for fmt in ("lua", "tcl"):
        r = ModuleShell.lmod(result.modulepath[fmt], tmp_path).run(
            f"$LMOD_DIR/check_module_tree_syntax {result.modulepath[fmt]} 2>&1")
        assert "No errors found" in r.stdout
    tcl_files = [str(p) for p in tree_files(tmp_path / "modules/tcl")]
    assert len(tcl_files) == len(stack) + 2   # and the .modulerc of zlib (hidden) and tool (default)
    proc = subprocess.run([TCLINT, *tcl_files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("tool_fmt", TOOLS[1:], ids=["-".join(t) for t in TOOLS[1:]])
def test_tcl_help_survives_quoting_and_long_lines(tmp_path, stack, tool_fmt, em5):
    tool, fmt = tool_fmt
    sh = shell(tool, fmt, tree_of(tmp_path, stack, fmt), tmp_path, em5)
    hdf5 = stack[2]
    r = sh.run("module help hdf5/1.14.0 2>&1; module whatis hdf5/1.14.0 2>&1")
    assert 'HDF5 "hierarchical" data [format] $lib' in r.stdout
    assert f"Prefix:    {hdf5.prefix}" in r.stdout and hdf5.artifact_id in r.stdout


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_a_release_candidate_is_not_the_default(tmp_path, tool_fmt, em5):
    """Environment Modules 5 on its own would load tool/2.0rc1 and lib/1.14.0-beta (issue 11 item 7):
    sitedist names the newest release as the default where a pre-release is among the versions."""
    tool, fmt = tool_fmt
    store = tmp_path / "store"
    entries = [package(store, "tool", v) for v in ("1.9", "2.0", "2.0rc1")]
    entries += [package(store, "lib", v) for v in ("1.14.0", "1.14.0-beta")]
    tree = publish(entries, {"root": str(tmp_path / "modules"), "formats": [fmt], "layout": "flat"}).modulepath[fmt]
    r = shell(tool, fmt, tree, tmp_path, em5).run("module load tool lib; echo TOOL: $(tool); echo LIB: $(lib)")
    assert f"TOOL: tool 2.0 {entries[1].artifact_id}\n" in r.stdout, r.stdout + r.stderr
    assert f"LIB: lib 1.14.0 {entries[3].artifact_id}\n" in r.stdout, r.stdout + r.stderr
