"""Modules of a real stack built by `sitedist sync`, loaded with real Lmod and Environment Modules 5:
flat for the core packages, hierarchical for an MPI package built with two MPI toolchains."""

import json
import os

import pytest

from conftest import REPO, run_cli, site_config
from modtools import ModuleShell, em5_init, user_env  # noqa: F401 (em5_init is a fixture)

FIXTURE_RECIPES = os.path.join(REPO, "tests", "fixtures")
PROGRAMS = {"hello": "hello", "xz": "xz --version", "lz4": "lz4 -V", "bzip2": "bzip2 --help 2>&1 | head -1",
            "libpng": "libpng-config --version", "zlib": None, "libffi": None, "libyaml": None}


@pytest.fixture(scope="module")
def flat(shared_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flat")
    config = site_config(tmp, {p: None for p in PROGRAMS}, store=shared_store,
                         extra=f"modules: {{root: {tmp}/modules, layout: flat}}\n")
    run_cli("sync", "-j", "2", config)
    arts = {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}
    return tmp, arts


@pytest.mark.parametrize("tool", ["lmod", "em5"])
def test_every_module_loads_runs_and_unloads(flat, tool, tmp_path, request):
    tmp, arts = flat
    if tool == "lmod":
        sh = ModuleShell.lmod(f"{tmp}/modules/lmod", tmp_path)
    else:
        sh = ModuleShell(request.getfixturevalue("em5_init"), f"{tmp}/modules/tcl", tmp_path)
    for name, program in PROGRAMS.items():
        version = arts[name]["version"]
        script = f"snap before; module load {name}/{version}; snap loaded\n"
        if program:
            script += f"echo RUN: $({program})\n"
        script += f"module unload {name}; snap after"
        r = sh.run(script)
        loaded = r.snaps["loaded"]
        prefix = arts[name]["prefix"]
        var = name.upper() + "_ROOT"
        assert loaded[var] == prefix, (name, loaded.get(var))
        if os.path.isdir(os.path.join(prefix, "bin")):
            assert loaded["PATH"].split(":")[0] == os.path.join(prefix, "bin")
        if os.path.isdir(os.path.join(prefix, "lib", "pkgconfig")):
            assert os.path.join(prefix, "lib", "pkgconfig") in loaded["PKG_CONFIG_PATH"].split(":")
        if any(os.path.isdir(os.path.join(prefix, d)) for d in ("lib", "include")):
            assert prefix in loaded["CMAKE_PREFIX_PATH"].split(":")
        assert prefix not in loaded.get("LD_LIBRARY_PATH", ""), "artifacts use RUNPATH, not LD_LIBRARY_PATH"
        if program:
            out = r.stdout.split("RUN:")[1].strip()
            assert out, f"{program} printed nothing"
            if name == "hello":
                assert out == "Hello, world!"
            elif name == "libpng":
                assert out == version
            else:
                assert version.split(".")[0] in out, out
        assert user_env(r.snaps["after"]) == user_env(r.snaps["before"]), f"unloading {name} left changes"


def test_flat_tree_passes_lmod_syntax_check(flat, tmp_path):
    tmp, _ = flat
    for tree in ("lmod", "tcl"):
        r = ModuleShell.lmod(f"{tmp}/modules/{tree}", tmp_path).run(
            f"$LMOD_DIR/check_module_tree_syntax {tmp}/modules/{tree} 2>&1")
        assert "No errors found" in r.stdout, r.stdout


def test_hierarchical_mpi_modules(shared_store, tmp_path):
    config = site_config(tmp_path, {"mpihello": "{toolchains: [gcc-openmpi, gcc-mpich]}", "zlib": None},
                         store=shared_store, recipes=[FIXTURE_RECIPES], extra=f"""
toolchains:
  gcc-openmpi: {{compiler: gcc, mpi: openmpi}}
  gcc-mpich: {{compiler: gcc, mpi: mpich}}
modules: {{root: {tmp_path}/modules, layout: hierarchical, formats: [lua]}}
""")
    run_cli("sync", config)
    arts = json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]
    builds = {a["toolchain"]: a["prefix"] for a in arts if a["name"] == "mpihello"}
    sh = ModuleShell.lmod(f"{tmp_path}/modules/lmod/Core", tmp_path)
    r = sh.run("echo CORE: $(module -t avail 2>&1 | tr '\\n' ' ')\n"
               "module load gcc openmpi mpihello; snap ompi\n"
               "echo RUN1: $(mpirun --allow-run-as-root -np 2 mpihello-c)\n"
               "module swap openmpi mpich; snap mpich\n"
               "echo RUN2: $(mpirun -np 2 mpihello-f)\n"
               "echo SPIDER: $(module spider mpihello/1.0 2>&1 | tr '\\n' ' ')\n")
    core = r.stdout.split("CORE:")[1].split("\n")[0]
    assert "gcc/12.2" in core and "zlib/1.2.13" in core and "mpihello" not in core
    assert r.snaps["ompi"]["MPIHELLO_ROOT"] == builds["gcc-openmpi"]
    assert "RUN1: c ranks=2 sum=1 lib=Open MPI" in r.stdout
    assert r.snaps["mpich"]["MPIHELLO_ROOT"] == builds["gcc-mpich"], "swap must reload the mpich build"
    assert builds["gcc-openmpi"] not in r.snaps["mpich"]["PATH"]
    assert "RUN2: fortran ranks=2 sum=1" in r.stdout
    spider = r.stdout.split("SPIDER:")[1]
    assert "openmpi/4.1" in spider and "mpich/4.0" in spider
