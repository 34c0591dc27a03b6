"""Hierarchical module trees (Core / Compiler / MPI) with the host's real gcc, Open MPI and MPICH, loaded by
real Lmod and Environment Modules 5; an MPI program built with each MPI shows which build is loaded."""

import hashlib
import subprocess
from pathlib import Path

import pytest
from modtools import LMOD_INIT, ModuleShell, em5_init, make_host_prefix, make_prefix, tree_files, user_env, TCLINT  # noqa: F401

from sitedist.modules import ModuleEntry, publish

TOOLS = [("lmod", "lua"), ("lmod", "tcl"), ("em5", "tcl")]
GCC = ("gcc", "12.2.0")
OMPI = ("openmpi", "4.1.4")
MPICH = ("mpich", "4.0.2")
HELLO_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING]; int len, rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank); MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_library_version(v, &len); v[strcspn(v, "\n,")] = 0;
    if (rank == 0) printf("mpihello %d ranks: %s\n", size, v);
    MPI_Finalize(); return 0;
}
"""


def aid(*parts):
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def host(store, kind, nv, links, env=()):
    a = aid(*nv)
    prefix, subdirs = make_host_prefix(store, nv[0], nv[1], a, links, wrap=kind == "mpi")
    return ModuleEntry(name=nv[0], version=nv[1], prefix=prefix, artifact_id=a, kind=kind, subdirs=subdirs,
                       description=f"host {nv[0]}", env=env)


def build_stack(tmp_path):
    store = tmp_path / "store"
    gcc = host(store, "compiler", GCC, {"gcc": "/usr/bin/gcc-12", "cc": "/usr/bin/gcc-12"}, (("set", "CC", "gcc"),))
    ompi = host(store, "mpi", OMPI, {"mpicc": "/usr/bin/mpicc.openmpi", "mpiexec": "/usr/bin/mpiexec.openmpi"})
    mpich = host(store, "mpi", MPICH, {"mpicc": "/usr/bin/mpicc.mpich", "mpiexec": "/usr/bin/mpiexec.mpich"})
    zlib_aid = aid("zlib")
    zprefix, zsub = make_prefix(store, "zlib", "1.3", zlib_aid)
    zlib = ModuleEntry(name="zlib", version="1.3", prefix=zprefix, artifact_id=zlib_aid, subdirs=zsub,
                       explicit=False)
    src = tmp_path / "mpihello.c"
    src.write_text(HELLO_C)
    hellos = []
    for mpi, wrapper in ((OMPI, "mpicc.openmpi"), (MPICH, "mpicc.mpich")):
        a = aid("mpihello", *mpi)
        prefix, subdirs = make_prefix(store, "mpihello", "1.0", a, programs=["mpihello-script"])
        subprocess.run([wrapper, str(src), "-o", f"{prefix}/bin/mpihello"], check=True)
        hellos.append(ModuleEntry(name="mpihello", version="1.0", prefix=prefix, artifact_id=a, subdirs=subdirs,
                                  compiler=GCC, mpi=mpi, toolchain=f"gcc-{mpi[0]}",
                                  run_depends=(("zlib", "1.3", zlib_aid),)))
    fa = aid("fftw")
    fprefix, fsub = make_prefix(store, "fftw", "3.3.10", fa)
    fftw = ModuleEntry(name="fftw", version="3.3.10", prefix=fprefix, artifact_id=fa, subdirs=fsub, compiler=GCC,
                       toolchain="gcc")
    return {"gcc": gcc, "openmpi": ompi, "mpich": mpich, "zlib": zlib, "hello_ompi": hellos[0],
            "hello_mpich": hellos[1], "fftw": fftw}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hier")
    stack = build_stack(tmp)
    config = {"root": str(tmp / "modules"), "layout": "hierarchical", "formats": ["lua", "tcl"]}
    result = publish(list(stack.values()), config)
    return tmp, stack, result


@pytest.fixture
def em5(request):
    if request.node.callspec.params["tool_fmt"][0] == "em5":
        return request.getfixturevalue("em5_init")
    return None


@pytest.mark.parametrize("tool_fmt", TOOLS, ids=["-".join(t) for t in TOOLS])
def test_loading_compiler_then_mpi_opens_the_mpi_level_and_swap_swaps_the_build(published, tool_fmt, em5,
                                                                                tmp_path):
    tool, fmt = tool_fmt
    _, s, result = published
    sh = ModuleShell(LMOD_INIT if tool == "lmod" else em5, result.modulepath[fmt], tmp_path)
    r = sh.run("snap before; echo CORE: $(module -t avail 2>&1 | tr '\\n' ' ')\n"
               "module load gcc; echo GCC: $(module -t avail 2>&1 | tr '\\n' ' '); snap gcc\n"
               "module load openmpi; echo OMPI: $(module -t avail 2>&1 | tr '\\n' ' ')\n"
               "module load mpihello; snap ompi; echo RUN1: $(mpiexec -n 2 mpihello)\n"
               "module swap openmpi mpich; snap mpich; echo RUN2: $(mpiexec -n 2 mpihello)\n"
               "module purge; snap purged")
    core = r.stdout.split("CORE:")[1].split("\n")[0]
    assert "gcc/12.2.0" in core
    assert "mpihello" not in core and "fftw" not in core and "openmpi" not in core
    at_gcc = r.stdout.split("GCC:")[1].split("\n")[0]
    assert "openmpi/4.1.4" in at_gcc and "mpich/4.0.2" in at_gcc and "fftw/3.3.10" in at_gcc
    assert "mpihello" not in at_gcc
    assert "mpihello/1.0" in r.stdout.split("OMPI:")[1].split("\n")[0]
    # MODULEPATH goes through the stable symlink, never into a generation
    tree = result.modulepath[fmt].rsplit("/", 1)[0]
    assert r.snaps["gcc"]["MODULEPATH"].split(":")[0] == f"{tree}/Compiler/gcc/12.2"
    assert r.snaps["ompi"]["MODULEPATH"].split(":")[0] == f"{tree}/MPI/gcc/12.2/openmpi/4.1"
    assert r.snaps["ompi"]["MPIHELLO_ROOT"] == s["hello_ompi"].prefix
    assert r.snaps["ompi"]["ZLIB_ROOT"] == s["zlib"].prefix
    assert "RUN1: mpihello 2 ranks: Open MPI v4.1" in r.stdout
    assert r.snaps["mpich"]["MPIHELLO_ROOT"] == s["hello_mpich"].prefix
    assert s["hello_ompi"].prefix not in r.snaps["mpich"]["PATH"]
    assert "RUN2: mpihello 2 ranks: MPICH Version:" in r.stdout
    assert user_env(r.snaps["purged"]) == user_env(r.snaps["before"])


def test_lmod_family_replaces_the_loaded_mpi(published, tmp_path):
    _, s, result = published
    sh = ModuleShell.lmod(result.modulepath["lua"], tmp_path)
    r = sh.run("module load gcc openmpi mpihello; module load mpich; snap s; echo LIST: $(module -t list 2>&1)")
    assert r.snaps["s"]["LMOD_FAMILY_MPI"] == "mpich"
    assert r.snaps["s"]["MPIHELLO_ROOT"] == s["hello_mpich"].prefix
    assert "openmpi" not in r.stdout.split("LIST:")[1]


def test_em5_family_refuses_a_second_mpi(published, tmp_path, em5_init):
    _, s, result = published
    sh = ModuleShell(em5_init, result.modulepath["tcl"], tmp_path)
    r = sh.run("module load gcc openmpi; module load mpich", check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()


@pytest.mark.parametrize("fmt", ["lua", "tcl"])
def test_spider_finds_mpi_packages_from_core(published, tmp_path, fmt):
    _, s, result = published
    sh = ModuleShell.lmod(result.modulepath[fmt], tmp_path)
    r = sh.run("module spider mpihello/1.0 2>&1")
    assert "gcc/12.2.0  openmpi/4.1.4" in r.stdout
    assert "gcc/12.2.0  mpich/4.0.2" in r.stdout
    r = sh.run("module spider fftw/3.3.10 2>&1")
    assert "gcc/12.2.0" in r.stdout


def test_trees_pass_lmod_syntax_check_and_tclint(published, tmp_path):
    tmp, s, result = published
    for fmt in ("lua", "tcl"):
        sh = ModuleShell.lmod(result.modulepath[fmt], tmp_path)
        r = sh.run(f"$LMOD_DIR/check_module_tree_syntax {result.modulepath[fmt]} 2>&1")
        assert "No errors found" in r.stdout
    tcl_files = [str(p) for p in tree_files(Path(result.path, "tcl"))]
    assert len(tcl_files) >= 7
    proc = subprocess.run([TCLINT, *tcl_files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
