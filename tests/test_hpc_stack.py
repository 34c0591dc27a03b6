"""Issue 12's HPC stack end to end: `sitedist sync site_configs/hpc/site.yml` (real sources, the host's gcc,
Open MPI and MPICH) and what users then do with real Lmod and Environment Modules 5 on its hierarchical
tree: mpi4py over both MPIs, numpy on the store's OpenBLAS, h5py on the store's HDF5, parallel HDF5 from
two ranks, netCDF on HDF5, every shared library resolving into the store or the base system; a second
sync that does nothing; an OpenBLAS option that rebuilds exactly OpenBLAS and what depends on it; and
the same Python checks with a CPython built from its recipe (site-cpython.yml).

Every test here is marked ``hpc`` (pytest.ini): ``-m "not hpc"`` leaves the stack out. The stack is built
once per test run, into the run's shared store (``hpc_stack``), and every test of this file runs on one
xdist worker (``xdist_group``; .ci/run passes ``--dist loadgroup``) so that it is built once.
"""

import json
import os
import re
import subprocess
import textwrap

import pytest

from conftest import REPO, SOURCES, run_cli, tree_digest, write
from modtools import ModuleShell, em5_init  # noqa: F401 (em5_init is a fixture)

HPC = os.path.join(REPO, "site_configs", "hpc")
pytestmark = [pytest.mark.hpc, pytest.mark.slow, pytest.mark.xdist_group("hpc")]

# Libraries of packages the stack builds: a file of the stack must never resolve one of them outside the store.
BUILT_LIBS = re.compile(r"lib(hdf5[a-z_]*|openblas|fftw3[a-z_]*|netcdf|mpi4py)\.so")
BASE_SYSTEM = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")


def hpc_config(tmp, store, variant="site.yml", extra="", name=None):
    """A config that extends the shipped one, with the test's store, module tree and profile roots, and
    the repository's mirror (site_configs/hpc names ../../sources, the same directory)."""
    name = name or os.path.splitext(variant)[0]
    return write(tmp / f"{name}.yml", textwrap.dedent(f"""
        extends: [{os.path.join(HPC, variant)}]
        store: {store}
        mirrors: [{SOURCES}]
        modules: {{root: {tmp}/{name}-modules}}
        profiles:
          python: {{packages: [py-numpy, py-h5py, "py-mpi4py%gcc-openmpi"], root: {tmp}/{name}-profile}}
        """) + textwrap.dedent(extra))


def plan(config):
    return json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]


def by_name(artifacts):
    """name -> [artifact] (a package built with several toolchains has several)."""
    out = {}
    for a in artifacts:
        out.setdefault(a["name"], []).append(a)
    return out


def one(artifacts, name, toolchain="default"):
    found = [a for a in artifacts if a["name"] == name and (a["toolchain"] or "default") == toolchain]
    assert len(found) == 1, (name, toolchain, found)
    return found[0]


class Stack:
    def __init__(self, tmp, store, config, artifacts, sync):
        self.tmp, self.store_root, self.config, self.artifacts, self.sync = tmp, str(store), config, artifacts, sync
        name = os.path.splitext(os.path.basename(config))[0]
        self.modules, self.profile = os.path.join(tmp, f"{name}-modules"), os.path.join(tmp, f"{name}-profile")

    def shell(self, tool, home, request):
        if tool == "lmod":
            return ModuleShell.lmod(f"{self.modules}/lmod/Core", home)
        return ModuleShell(request.getfixturevalue("em5_init"), f"{self.modules}/tcl/Core", home)


def build_stack(tmp, store, variant):
    config = hpc_config(tmp, store, variant)
    sync = run_cli("sync", "-j", "2", "--progress", "plain", config)
    artifacts = plan(config)
    missing = [a["name"] for a in artifacts if a["state"] != "complete"]
    assert not missing, f"not built: {missing}\n{sync.stdout[-3000:]}"
    return Stack(tmp, store, config, artifacts, sync)


@pytest.fixture(scope="session")
def hpc_stack(shared_store, tmp_path_factory):
    """site_configs/hpc/site.yml synced once into the run's shared store."""
    return build_stack(tmp_path_factory.mktemp("hpc"), shared_store, "site.yml")


@pytest.fixture(scope="session")
def cpython_stack(hpc_stack, shared_store, tmp_path_factory):
    """site-cpython.yml in the same store: its C libraries are hpc_stack's artifacts, only CPython and the
    Python packages are built."""
    return build_stack(tmp_path_factory.mktemp("hpc-cpython"), shared_store, "site-cpython.yml")


# --- the Python checks, for both Pythons and both module tools -----------------------------------------

RANKS = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
         "print('RANK', c.Get_rank(), 'OF', c.Get_size(), MPI.Get_library_version().splitlines()[0], flush=True)")
NUMPY = textwrap.dedent("""\
    import numpy as np
    np.show_config()
    rng = np.random.default_rng(12)
    a = rng.integers(-9, 10, size=(500, 500))
    b = rng.integers(-9, 10, size=(500, 500))
    product = a.astype(np.float64) @ b.astype(np.float64)   # BLAS dgemm
    reference = a @ b                                       # numpy's own integer loop, no BLAS
    assert product.shape == (500, 500) and (product == reference).all()
    x = np.linalg.solve(a.astype(np.float64) + 1000 * np.eye(500), product[:, 0])   # LAPACK dgesv
    assert np.allclose((a + 1000 * np.eye(500)) @ x, product[:, 0])
    print('PRODUCT OK', np.__file__)
""")
H5PY = textwrap.dedent("""\
    import h5py, numpy as np
    with h5py.File('data.h5', 'w') as f:
        f.create_dataset('grid', data=np.arange(12.0).reshape(3, 4), compression='gzip')
        f['grid'].attrs['units'] = 'K'
    with h5py.File('data.h5', 'r') as f:
        data = f['grid'][...]
        assert data.shape == (3, 4) and data[2, 3] == 11.0 and f['grid'].attrs['units'] == 'K'
    print('H5PY OK', h5py.version.hdf5_version, h5py.__file__)
""")


def mpiexec(mpi, program):
    # Open MPI refuses root without --allow-run-as-root (ModuleShell also sets OMPI_ALLOW_RUN_AS_ROOT*).
    extra = " --allow-run-as-root --oversubscribe" if mpi == "openmpi" else ""
    return f"mpiexec{extra} -n 2 {program}"


def check_python_stack(stack, sh, home):
    """What issue 12 asks of the Python packages, with modules loaded the way users load them."""
    arts = stack.artifacts
    mpi4py = {a["toolchain"]: a["prefix"] for a in arts if a["name"] == "py-mpi4py"}
    numpy, h5py, openblas = one(arts, "py-numpy"), one(arts, "py-h5py"), one(arts, "openblas")
    hdf5 = one(arts, "hdf5")
    (home / "ranks.py").write_text(RANKS)
    (home / "np_check.py").write_text(NUMPY)
    (home / "h5_check.py").write_text(H5PY)
    r = sh.run("module load gcc openmpi py-mpi4py; snap ompi\n"
               f"echo PY1=$(command -v python3)\n{mpiexec('openmpi', 'python3 ranks.py')}\n"
               "module swap openmpi mpich; snap mpich\n"
               f"{mpiexec('mpich', 'python3 ranks.py')}\n"
               "module purge; module load py-numpy; snap numpy; python3 np_check.py\n"
               "module purge; module load py-h5py; snap h5py; python3 h5_check.py\n", timeout=300)
    out = r.stdout
    ranks = re.findall(r"^RANK (\d) OF (\d) (.*)$", out, re.M)
    assert sorted((rank, size) for rank, size, _ in ranks) == [("0", "2"), ("0", "2"), ("1", "2"), ("1", "2")], out
    libraries = [lib for _, _, lib in ranks]
    assert sum("Open MPI" in lib for lib in libraries) == 2 and sum("MPICH" in lib for lib in libraries) == 2, out
    # The Open MPI lines come first (before the swap), then MPICH's.
    assert all("Open MPI" in lib for lib in libraries[:2]) and all("MPICH" in lib for lib in libraries[2:]), out
    assert r.snaps["ompi"]["PY_MPI4PY_ROOT"] == mpi4py["gcc-openmpi"]
    assert r.snaps["mpich"]["PY_MPI4PY_ROOT"] == mpi4py["gcc-mpich"], "the swap must reload the MPICH build"
    assert "PYTHONPATH" not in r.snaps["numpy"], "Python packages are found without PYTHONPATH"
    python = out.split("PY1=")[1].splitlines()[0]
    assert python.startswith(stack.store_root), python
    # numpy: the store's OpenBLAS, by its prefix, and a product that matches the integer reference.
    config = out.split("PRODUCT OK")[0]
    # (YAML-like without PyYAML's help: 'name: openblas'; as JSON: '"name": "openblas"')
    assert re.search(r"blas\W.*?name\W+openblas", config, re.S), config[-3000:]
    assert openblas["prefix"] in config, f"show_config does not name the store's OpenBLAS {openblas['prefix']}"
    assert f"PRODUCT OK {numpy['prefix']}/" in out
    assert f"H5PY OK 1.10.8 {h5py['prefix']}/" in out
    # h5py's extension modules load the store's serial HDF5.
    ext = next(os.path.join(d, f) for d, _, fs in os.walk(h5py["prefix"]) for f in fs if f.startswith("defs."))
    ldd = subprocess.run(["ldd", ext], capture_output=True, text=True, check=True).stdout
    assert f"{hdf5['prefix']}/lib/libhdf5.so" in ldd, ldd


@pytest.mark.parametrize("tool", ["lmod", "em5"])
def test_python_stack_host_python(hpc_stack, tool, tmp_path, request):
    check_python_stack(hpc_stack, hpc_stack.shell(tool, tmp_path, request), tmp_path)


def test_parallel_hdf5_two_ranks_write_one_file(hpc_stack, tmp_path, request):
    """Parallel HDF5 at the MPI level: a C program built with that HDF5's h5pcc writes one dataset from 2
    ranks (MPI-IO, collective), then h5dump reads both halves."""
    (tmp_path / "phdf5.c").write_text(textwrap.dedent("""\
        #include <hdf5.h>
        #include <mpi.h>
        int main(int argc, char **argv) {
            int rank, size;
            MPI_Init(&argc, &argv);
            MPI_Comm_rank(MPI_COMM_WORLD, &rank);
            MPI_Comm_size(MPI_COMM_WORLD, &size);
            hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
            H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
            hid_t file = H5Fcreate("parallel.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
            hsize_t dims[1] = {4 * (hsize_t)size}, count[1] = {4}, start[1] = {4 * (hsize_t)rank};
            hid_t space = H5Screate_simple(1, dims, NULL);
            hid_t dset = H5Dcreate2(file, "ranks", H5T_NATIVE_INT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            hid_t mem = H5Screate_simple(1, count, NULL);
            H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
            hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
            H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
            int data[4] = {rank, rank, rank, rank};
            herr_t status = H5Dwrite(dset, H5T_NATIVE_INT, mem, space, dxpl, data);
            H5Pclose(dxpl); H5Sclose(mem); H5Dclose(dset); H5Sclose(space); H5Fclose(file); H5Pclose(fapl);
            MPI_Finalize();
            return status < 0;
        }
        """))
    for mpi in ("openmpi", "mpich"):
        hdf5 = one(hpc_stack.artifacts, "hdf5", f"gcc-{mpi}")
        sh = hpc_stack.shell("lmod", tmp_path, request)
        r = sh.run(f"module load gcc {mpi} hdf5; snap loaded\n"
                   "h5pcc -o phdf5 phdf5.c\n"
                   f"rm -f parallel.h5; {mpiexec(mpi, './phdf5')}\n"
                   "echo DUMP; h5dump -d ranks parallel.h5\n"
                   "echo LDD; ldd ./phdf5\n", timeout=300)
        assert r.snaps["loaded"]["HDF5_ROOT"] == hdf5["prefix"]
        dump = r.stdout.split("DUMP")[1].split("LDD")[0]
        assert re.search(r"DATASPACE\s+SIMPLE\s+\{\s*\(\s*8\s*\)", dump), dump
        assert re.search(r"\(0\):\s*0,\s*0,\s*0,\s*0,\s*1,\s*1,\s*1,\s*1", dump), dump
        ldd = r.stdout.split("LDD")[1]
        assert f"{hdf5['prefix']}/lib/libhdf5.so" in ldd, ldd
        other = "libmpich" if mpi == "openmpi" else "libmpi.so.40"
        assert other not in ldd, f"the {mpi} build links the other MPI: {ldd}"


def test_netcdf_has_hdf5(hpc_stack, tmp_path, request):
    for tool in ("lmod", "em5"):
        r = hpc_stack.shell(tool, tmp_path, request).run(
            "module load netcdf-c; echo HAS=$(nc-config --has-hdf5) HAS4=$(nc-config --has-nc4)\n"
            "ncgen -k nc4 -o x.nc <<'EOF'\nnetcdf x { dimensions: n = 3 ; variables: int v(n) ; data: v = 1, 2, 3 ; }\nEOF\n"
            "echo KIND=$(ncdump -k x.nc)\n")
        assert "HAS=yes HAS4=yes" in r.stdout, (tool, r.stdout)
        assert "KIND=netCDF-4" in r.stdout, (tool, r.stdout)


def elf_files(prefix):
    for d, _, files in os.walk(prefix):
        if "/.sitedist" in d:
            continue
        for f in files:
            path = os.path.join(d, f)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            yield path


def test_every_shared_library_resolves_into_store_or_base_system(hpc_stack):
    """ldd on every ELF shared object of every package the stack built (libraries and Python extension
    modules): each dependency is found, in the store or the host's base system, and none of the stack's
    own libraries (libhdf5, libopenblas, libfftw3, libnetcdf) comes from the system."""
    store = hpc_stack.store_root
    checked, problems = 0, []
    for a in hpc_stack.artifacts:
        if a["kind"] != "package":
            continue
        for path in elf_files(a["prefix"]):
            if ".so" not in os.path.basename(path):
                continue
            out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
            checked += 1
            for line in out.splitlines():
                m = re.match(r"\s*(\S+) => (.*?) \(0x", line)
                if "not found" in line:
                    problems.append(f"{path}: {line.strip()}")
                elif m:
                    lib, where = m.groups()
                    if where.startswith(store):
                        continue
                    if not where.startswith(BASE_SYSTEM) or BUILT_LIBS.search(lib):
                        problems.append(f"{path}: {lib} => {where}")
    assert checked > 50, f"only {checked} shared objects found: is the stack built?"
    assert not problems, "\n".join(problems[:40])


def test_profile_has_the_python_stack(hpc_stack):
    r = subprocess.run([os.path.join(hpc_stack.profile, "bin", "python3"), "-c",
                        "import numpy, h5py, mpi4py.MPI; print(numpy.__version__, h5py.__version__, mpi4py.__version__)"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(hpc_stack.tmp)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1.26.4", "3.11.0", "3.1.6"]


def test_second_sync_is_a_no_op(hpc_stack):
    prefixes = [a["prefix"] for a in hpc_stack.artifacts if a["kind"] == "package"]
    before = tree_digest(*prefixes, hpc_stack.modules)
    proc = run_cli("sync", hpc_stack.config)
    assert "nothing to build" in proc.stdout, proc.stdout
    assert tree_digest(*prefixes, hpc_stack.modules) == before
    assert plan(hpc_stack.config) == hpc_stack.artifacts


def test_openblas_option_rebuilds_openblas_and_its_dependents_only(hpc_stack, tmp_path):
    """A changed OpenBLAS option changes the ids of OpenBLAS, numpy and h5py (which runs numpy), and of
    nothing else: not HDF5, netCDF, FFTW, mpi4py or the Python build tools."""
    changed = hpc_config(tmp_path, hpc_stack.store_root, name="threads-none", extra="""
        packages:
          openblas: {options: {threads: none}}
        """)
    old = {(a["name"], a["toolchain"]): a["id"] for a in hpc_stack.artifacts}
    new = {(a["name"], a["toolchain"]): a for a in plan(changed)}
    assert set(new) == set(old)
    rebuilt = sorted(name for (name, tc), a in new.items() if a["id"] != old[(name, tc)])
    assert rebuilt == ["openblas", "py-h5py", "py-numpy"], rebuilt
    assert all(a["state"] == "missing" for a in new.values() if a["name"] in rebuilt)
    assert all(a["state"] == "complete" for a in new.values() if a["name"] not in rebuilt)


def test_python_stack_cpython(cpython_stack, tmp_path, request):
    """The same checks with the CPython recipe as the Python: python3 on PATH is the store's CPython."""
    cpython = one(cpython_stack.artifacts, "cpython")
    sh = cpython_stack.shell("lmod", tmp_path, request)
    check_python_stack(cpython_stack, sh, tmp_path)
    r = sh.run("module load py-numpy; python3 -c 'import sys; print(\"BASE\", sys.base_prefix)'")
    assert f"BASE {cpython['prefix']}" in r.stdout, r.stdout
