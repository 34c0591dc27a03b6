"""The HPC C libraries of issue 12 built from their real sources with the real compilers and both
MPIs (marked ``hpc``: minutes on 2 cores; they share the session's store with the other stack tests,
so each library is built once per run): OpenBLAS with LAPACK, HDF5 serial and parallel per MPI
toolchain, netCDF-C on the serial HDF5, FFTW with MPI per MPI toolchain. Each is exercised: a C
program solves a linear system with the store's LAPACK, ``nc-config --has-hdf5`` says yes, the
parallel HDF5 says so and links its toolchain's MPI, FFTW's MPI library links its toolchain's MPI."""

import json
import os
import subprocess

import pytest

from conftest import run_cli, site_config, write

pytestmark = [pytest.mark.slow, pytest.mark.hpc]

TOOLCHAINS = """
toolchains:
  gcc-openmpi: {compiler: gcc, mpi: openmpi}
  gcc-mpich: {compiler: gcc, mpi: mpich}
"""
PACKAGES = {"openblas": None, "hdf5": "{toolchains: [default, gcc-openmpi, gcc-mpich]}", "netcdf-c": None,
            "fftw": "{toolchains: [gcc-openmpi, gcc-mpich]}"}
MPI_SONAME = {"gcc-openmpi": "libmpi.so.40", "gcc-mpich": "libmpich.so.12"}

SOLVE = r"""
#include <stdio.h>
void dgesv_(const int *n, const int *nrhs, double *a, const int *lda, int *ipiv, double *b, const int *ldb, int *info);
double cblas_ddot(const int n, const double *x, const int incx, const double *y, const int incy);
int main(void) {
    int n = 3, nrhs = 1, ipiv[3], info;
    double a[9] = {4, 1, 0,  1, 3, 1,  0, 1, 2};   /* column-major, symmetric */
    double b[3] = {5, 5, 3};                       /* a * (1, 1, 1) */
    dgesv_(&n, &nrhs, a, &n, ipiv, b, &n, &info);
    printf("%d %.6f %.6f %.6f %.6f\n", info, b[0], b[1], b[2], cblas_ddot(3, b, 1, b, 1));
    return info;
}
"""


@pytest.fixture(scope="module")
def hpc(shared_store, sources, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hpc")
    config = site_config(tmp, PACKAGES, extra=TOOLCHAINS, store=shared_store)
    run_cli("sync", config, "-j", "2")
    return config


def prefixes(config, name):
    """toolchain name -> prefix of every build of ``name`` in the plan (from ``sitedist show``)."""
    out, prefix = {}, None
    for line in run_cli("show", config, name).stdout.splitlines():
        if line.startswith("  prefix:"):
            prefix = line.split(None, 1)[1].strip()
        elif line.startswith("  kind:") and "toolchain:" in line:
            out[line.split("toolchain:")[1].split()[0]] = prefix
    return out


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].split("]")[0] for line in out.splitlines() if "(NEEDED)" in line]


def test_openblas_has_lapack_and_solves_a_system(hpc, tmp_path):
    (prefix,) = prefixes(hpc, "openblas").values()
    libs = os.listdir(os.path.join(prefix, "lib"))
    assert "libopenblas.so.0" in libs and not any(lib.endswith(".a") for lib in libs), libs
    src = write(tmp_path / "solve.c", SOLVE)
    exe = str(tmp_path / "solve")
    subprocess.run(["gcc", src, "-o", exe, f"-L{prefix}/lib", "-lopenblas", f"-Wl,-rpath,{prefix}/lib"], check=True)
    assert subprocess.run([exe], capture_output=True, text=True, check=True).stdout.split() == \
        ["0", "1.000000", "1.000000", "1.000000", "3.000000"]
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
    assert f"{prefix}/lib/libopenblas.so.0" in ldd
    assert "liblapack" not in ldd and "libblas" not in ldd          # LAPACK is inside libopenblas
    assert "libgfortran" in " ".join(needed(os.path.join(prefix, "lib", "libopenblas.so.0")))  # Fortran LAPACK
    pc = open(os.path.join(prefix, "lib", "pkgconfig", "openblas.pc")).read()
    assert f"libdir={prefix}/lib" in pc or "libdir=${exec_prefix}/lib" in pc


def test_netcdf_is_built_on_the_serial_hdf5(hpc):
    (netcdf,) = prefixes(hpc, "netcdf-c").values()
    hdf5 = prefixes(hpc, "hdf5")
    assert set(hdf5) == {"default", "gcc-openmpi", "gcc-mpich"}
    nc_config = os.path.join(netcdf, "bin", "nc-config")
    assert subprocess.run([nc_config, "--has-hdf5"], capture_output=True, text=True).stdout.strip() == "yes"
    assert subprocess.run([nc_config, "--has-dap"], capture_output=True, text=True).stdout.strip() == "no"
    lib = os.path.join(netcdf, "lib", "libnetcdf.so")
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    assert f"{hdf5['default']}/lib/libhdf5" in ldd, ldd
    assert "libcurl" not in ldd and "libmpi" not in ldd


def test_hdf5_is_parallel_exactly_in_the_mpi_toolchains(hpc):
    for toolchain, prefix in prefixes(hpc, "hdf5").items():
        settings = open(os.path.join(prefix, "lib", "libhdf5.settings")).read()
        parallel = "Parallel HDF5: yes" in settings
        assert parallel == (toolchain != "default"), (toolchain, settings)
        deps = needed(os.path.join(prefix, "lib", "libhdf5.so"))
        for tc, soname in MPI_SONAME.items():
            assert (soname in deps) == (tc == toolchain), (toolchain, deps)


def test_fftw_has_the_mpi_library_of_its_toolchain(hpc):
    builds = prefixes(hpc, "fftw")
    assert set(builds) == {"gcc-openmpi", "gcc-mpich"}
    for toolchain, prefix in builds.items():
        deps = needed(os.path.join(prefix, "lib", "libfftw3_mpi.so"))
        assert MPI_SONAME[toolchain] in deps and all(MPI_SONAME[t] not in deps for t in MPI_SONAME if t != toolchain)
        assert not any("mpi" in d for d in needed(os.path.join(prefix, "lib", "libfftw3.so")))  # the serial part
        spec = json.load(open(os.path.join(prefix, ".sitedist", "spec.json")))
        assert spec["toolchain_name"] == toolchain
