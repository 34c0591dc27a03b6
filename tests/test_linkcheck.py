"""The post-build link checks (sitedist/build/linkcheck.py) with real compilers, real MPIs and real
builds: a build that links the MPI library of another MPI than its toolchain's, the host's copy of a
library the plan builds, or a library found nowhere fails with the file and the library named, and
leaves no artifact; the same program built with the right MPI passes."""

import os
import shutil

import pytest

from conftest import run_cli, site_config, tree_digest, write
from sitedist.build.linkcheck import library_stem, name_stem

pytestmark = pytest.mark.skipif(not (shutil.which("mpicc.openmpi") and shutil.which("mpicc.mpich")),
                                reason="needs Debian's Open MPI and MPICH side by side")

HELLO = """
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) { MPI_Init(&argc, &argv); puts("hello"); MPI_Finalize(); return 0; }
"""

TOOLCHAINS = """
toolchains:
  gcc-openmpi: {compiler: gcc, mpi: openmpi}
  gcc-mpich: {compiler: gcc, mpi: mpich}
"""


def test_library_stems_name_the_package_behind_a_soname():
    assert library_stem("libhdf5_serial.so.103") == library_stem("libhdf5.so.103") == "hdf5"
    assert library_stem("libfftw3_mpi.so.3") == "fftw3"
    assert library_stem("libz.so.1") == "z"
    assert (name_stem("netcdf-c"), name_stem("fftw"), name_stem("zlib"), name_stem("libpng")) == \
        ("netcdf", "fftw", "z", "png")
    assert name_stem("py-numpy") is None


@pytest.mark.slow
def test_a_build_linking_the_other_mpi_is_refused_and_the_right_one_passes(tmp_path):
    """The same recipe links MPICH's library explicitly: with toolchain gcc-mpich it builds, with
    gcc-openmpi the link check refuses it, naming the file, the library and both MPIs."""
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "hello.c", HELLO)
    # Compiled with the toolchain's wrapper, then linked to MPICH's library by name: the mistake of a
    # build system that finds "libmpich" on its own.
    write(recipes / "mpichlinked.yml", """
        name: mpichlinked
        versions: {"1.0": {path: src}}
        build: commands
        commands:
          - mkdir -p "$PREFIX/bin"
          - $MPICC -c hello.c -o hello.o
          - $CC -o "$PREFIX/bin/hello" hello.o -l:libmpich.so.12
        """)
    store = tmp_path / "store"
    config = site_config(tmp_path, {"mpichlinked": "{toolchains: [gcc-openmpi, gcc-mpich]}"}, extra=TOOLCHAINS,
                         recipes=[recipes], store=store)
    proc = run_cli("sync", config, "-j", "2", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "link check failed" in out
    assert ("bin/hello links libmpich.so.12, the MPI library of mpich, but it is built with toolchain "
            "gcc-openmpi, whose MPI is openmpi") in out
    built = sorted(os.listdir(store / "mpichlinked"))
    assert len(built) == 1, built   # the gcc-mpich build only: the refused one left no prefix
    spec = (store / "mpichlinked" / built[0] / ".sitedist" / "spec.json").read_text()
    assert '"toolchain_name": "gcc-mpich"' in spec


@pytest.mark.slow
def test_the_host_copy_of_a_library_the_plan_builds_is_refused(tmp_path):
    """zlib is in the plan; a recipe that forgot 'depends: link: [zlib]' links the host's libz."""
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "z.c", '#include <zlib.h>\nint main(void) { return zlibVersion()[0] == 0; }\n')
    write(recipes / "zuser.yml", """
        name: zuser
        versions: {"1.0": {path: src}}
        build: commands
        commands:
          - mkdir -p "$PREFIX/bin"
          - $CC -o "$PREFIX/bin/zuser" z.c -l:libz.so.1
        """)
    store = tmp_path / "store"
    run_cli("sync", site_config(tmp_path, {"zlib": None}, recipes=[recipes], store=store, name="z.yml"))
    before = tree_digest(store / "zlib")
    config = site_config(tmp_path, {"zlib": None, "zuser": None}, recipes=[recipes], store=store)
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0
    assert "bin/zuser links" in proc.stderr and "the host's libz.so.1, but this plan builds zlib" in proc.stderr
    assert "'depends: link'" in proc.stderr
    assert not (store / "zuser").exists() or not os.listdir(store / "zuser")
    assert tree_digest(store / "zlib") == before


@pytest.mark.slow
def test_a_library_found_nowhere_is_refused(tmp_path):
    """A program linked to a library of its build directory, which is not installed."""
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "lib.c", "int answer(void) { return 42; }\n")
    write(recipes / "src" / "main.c", "int answer(void);\nint main(void) { return answer() != 42; }\n")
    write(recipes / "lost.yml", """
        name: lost
        versions: {"1.0": {path: src}}
        build: commands
        commands:
          - mkdir -p "$PREFIX/bin"
          - $CC -shared -fPIC -Wl,-soname,libanswer.so.1 -o libanswer.so.1 lib.c
          - $CC -o "$PREFIX/bin/lost" main.c ./libanswer.so.1
        """)
    store = tmp_path / "store"
    proc = run_cli("sync", site_config(tmp_path, {"lost": None}, recipes=[recipes], store=store), check=False)
    assert proc.returncode != 0
    assert "bin/lost needs libanswer.so.1, which is found neither in the store" in proc.stderr
