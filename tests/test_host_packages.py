"""Host compilers and MPI as host packages: builds with two MPI toolchains side by side, each run with
its own mpirun and linked to its own MPI; the hash rule for host packages; bad host input."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, run_cli, site_config, tree_digest, write

FIXTURES = os.path.join(REPO, "tests", "fixtures")
TOOLCHAINS = """
toolchains:
  gcc-openmpi: {compiler: gcc, mpi: openmpi}
  gcc-mpich: {compiler: gcc, mpi: mpich}
"""


def artifacts(config):
    return json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]


def mpirun(prefix, mpi):
    launcher = os.path.join(prefix, "bin", "mpirun")
    return [launcher, "--allow-run-as-root", "--oversubscribe", "-np", "2"] if mpi == "openmpi" else [launcher, "-np", "2"]


def test_mpi_package_with_two_toolchains(tmp_path):
    config = site_config(tmp_path, {"mpihello": "{toolchains: [gcc-openmpi, gcc-mpich]}"},
                         recipes=[FIXTURES], extra=TOOLCHAINS)
    run_cli("sync", "-j", "2", config)
    arts = artifacts(config)
    builds = {a["toolchain"]: a for a in arts if a["name"] == "mpihello"}
    hosts = {a["name"]: a for a in arts if a["kind"] in ("mpi", "compiler")}
    assert set(builds) == {"gcc-openmpi", "gcc-mpich"}
    assert builds["gcc-openmpi"]["id"] != builds["gcc-mpich"]["id"]
    assert os.path.dirname(builds["gcc-openmpi"]["prefix"]) == os.path.dirname(builds["gcc-mpich"]["prefix"])
    expect = {"gcc-openmpi": ("openmpi", "libmpi.so.40", "Open MPI"), "gcc-mpich": ("mpich", "libmpich.so.12", "MPICH")}
    for tc, (mpi, soname, brand) in expect.items():
        prefix = builds[tc]["prefix"]
        for program, lang in (("mpihello-c", "c"), ("mpihello-f", "fortran")):
            exe = os.path.join(prefix, "bin", program)
            ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
            assert soname in ldd, ldd
            other = "libmpich.so" if mpi == "openmpi" else "libmpi.so.40"
            assert other not in ldd, ldd
            out = subprocess.run(mpirun(hosts[mpi]["prefix"], mpi) + [exe], capture_output=True, text=True,
                                 timeout=120)
            assert out.returncode == 0, out.stderr
            assert re.search(rf"{lang} ranks=2 sum=1", out.stdout), out.stdout
            if lang == "c":
                assert brand in out.stdout
    # The MPI host packages are store prefixes whose bin/ links to the vendor wrappers.
    assert "exec /usr/bin/mpicc.openmpi " in open(os.path.join(hosts["openmpi"]["prefix"], "bin", "mpicc")).read()
    assert shutil.which("mpicc.mpich") in open(os.path.join(hosts["mpich"]["prefix"], "bin", "mpicc")).read()


def test_same_host_same_hashes_declared_mpi_version_change_moves_dependents_only(tmp_path):
    packages = {"mpihello": "{toolchains: [gcc-openmpi, gcc-mpich]}", "zlib": None}
    config = site_config(tmp_path, packages, recipes=[FIXTURES], extra=TOOLCHAINS)
    first = {(a["name"], a["toolchain"]): a["id"] for a in artifacts(config)}
    again = {(a["name"], a["toolchain"]): a["id"] for a in json.loads(
        run_cli("sync", "--dry-run", "--json", "--reprobe", config).stdout)["artifacts"]}
    assert first == again

    # Declare MPICH by prefix, as a site does for a vendor MPI outside PATH: a fake MPICH 4.1 whose
    # wrappers report another version.
    fake = tmp_path / "vendor-mpich" / "bin"
    fake.mkdir(parents=True)
    for tool in ("mpicc", "mpicxx", "mpifort"):
        real = shutil.which(f"{tool}.mpich")
        write(fake / tool, f"""#!/bin/sh
            [ "$1" = -v ] && {{ echo "{tool} for MPICH version 4.1.2"; exit 0; }}
            exec {real} "$@"
            """)
        os.chmod(fake / tool, 0o755)
    declared = TOOLCHAINS + f"""
host:
  packages:
    mpich: {{kind: mpi, implementation: mpich, prefix: {fake.parent}, version: "4.1"}}
"""
    config2 = site_config(tmp_path, packages, recipes=[FIXTURES], extra=declared, name="site2.yml")
    second = {(a["name"], a["toolchain"]): a["id"] for a in artifacts(config2)}
    assert second[("mpihello", "gcc-mpich")] != first[("mpihello", "gcc-mpich")]
    assert second[("mpihello", "gcc-openmpi")] == first[("mpihello", "gcc-openmpi")]
    assert second[("zlib", "default")] == first[("zlib", "default")]


@pytest.mark.parametrize("extra, message", [
    ("host:\n  packages:\n    mympi: {kind: mpi, implementation: mpich, prefix: /nonexistent/mpich}\n",
     "/nonexistent/mpich"),
    ("host:\n  packages:\n    openmpi: {version: '3.1'}\n", "3.1"),
    ("toolchains:\n  tc: {compiler: intel}\n", "no host compiler 'intel'"),
    ("toolchains:\n  tc: {compiler: gcc, mpi: mvapich}\n", "no host mpi 'mvapich'"),
])
def test_bad_host_input(tmp_path, extra, message):
    config = site_config(tmp_path, {"zlib": None}, extra=extra)
    before = tree_digest(tmp_path / "store")
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{config}:" in proc.stderr
    assert tree_digest(tmp_path / "store") == before


def test_pin_mismatch_names_both_versions(tmp_path):
    config = site_config(tmp_path, {"zlib": None}, extra="host:\n  packages:\n    openmpi: {version: '3.1'}\n")
    err = run_cli("sync", config, check=False).stderr
    assert "pins version 3.1" in err and "4.1" in err, err
