"""Host probing against the real tools of the machine: Debian's gcc 12, Open MPI and MPICH side by side."""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import archspec.cpu
import psutil
import pytest

from sitedist.errors import ConfigError, HostError
from sitedist.host.probe import (ProbeReport, elf_soname, probe_declared_compiler, probe_declared_mpi,
                                 probe_host, version_matches)
from sitedist.host.target import host_target, resolve_target, target_flags


def out(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def needed(binary):
    """DT_NEEDED entries of a binary, as readelf prints them."""
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out("readelf", "-d", binary))


def readelf_soname(path):
    return re.search(r"\(SONAME\)\s+Library soname: \[(.+?)\]", out("readelf", "-d", path)).group(1)


@pytest.fixture(scope="module")
def report():
    return probe_host(timeout=10)


def by_name(items, name):
    found = [i for i in items if i.name == name]
    assert len(found) == 1, f"expected one {name}, got {found}"
    return found[0]


def test_gcc_drivers_and_versions(report):
    gcc = by_name(report.compilers, "gcc")
    for tool, attr in (("gcc", "cc"), ("g++", "cxx"), ("gfortran", "fc")):
        assert gcc.version == out(tool, "-dumpfullversion").strip()
        assert os.path.realpath(getattr(gcc, attr)) == os.path.realpath(shutil.which(tool))
    assert gcc.languages == ("c", "c++", "fortran")
    assert gcc.triple == out("gcc", "-dumpmachine").strip()
    # Debian's cc is gcc, not a Cray wrapper
    assert not [c for c in report.compilers if c.name == "cray"]


def mpi_program(tmp_path, mpi):
    (tmp_path / "hello.c").write_text(
        '#include <mpi.h>\nint main(int c, char **v) { MPI_Init(&c, &v); MPI_Finalize(); return 0; }\n')
    (tmp_path / "hello.f90").write_text("program hello\n  use mpi\n  integer :: ierr\n"
                                        "  call MPI_Init(ierr)\n  call MPI_Finalize(ierr)\nend program\n")
    subprocess.run([mpi.mpicc, "hello.c", "-o", "hello_c"], cwd=tmp_path, check=True)
    subprocess.run([mpi.mpifc, "hello.f90", "-o", "hello_f"], cwd=tmp_path, check=True)
    return str(tmp_path / "hello_c"), str(tmp_path / "hello_f")


@pytest.mark.parametrize("name, version_cmd, version_re, suffix, c_library", [
    ("openmpi", ("ompi_info", "--parsable"), r"^ompi:version:full:(\S+)", ".openmpi", "libmpi.so"),
    ("mpich", ("mpichversion",), r"^MPICH Version:\s+(\S+)", ".mpich", "libmpich.so"),
])
def test_both_mpis(report, tmp_path, name, version_cmd, version_re, suffix, c_library):
    mpi = by_name(report.mpis, name)
    assert mpi.version == re.search(version_re, out(*version_cmd), re.M).group(1)
    assert mpi.mpicc == shutil.which("mpicc" + suffix)
    assert mpi.mpicxx == shutil.which("mpicxx" + suffix)
    assert mpi.mpifc == shutil.which("mpifort" + suffix)
    assert mpi.mpirun == shutil.which("mpirun" + suffix)
    assert mpi.languages == ("c", "c++", "fortran")
    assert mpi.wraps == "gcc " + out("gcc", "-dumpfullversion").strip()
    assert any(f.startswith("-I") for f in mpi.compile_flags)
    assert any(f.startswith("-l") for f in mpi.link_flags)
    # what the programs built with the wrappers really link against is in `libraries`
    c_bin, f_bin = mpi_program(tmp_path, mpi)
    c_needed = [n for n in needed(c_bin) if "mpi" in n]
    f_needed = [n for n in needed(f_bin) if "mpi" in n]
    assert c_needed and f_needed
    assert set(c_needed + f_needed) <= set(mpi.libraries)
    # ... and the C library is the soname of the library file the link flags name
    libdir = next(f[2:] for f in mpi.link_flags if f.startswith("-L"))
    assert readelf_soname(os.path.join(libdir, c_library)) in c_needed


def test_unsuffixed_mpicc_alternative_is_not_a_third_mpi(report):
    assert sorted(m.name for m in report.mpis) == ["mpich", "openmpi"]
    target = os.path.realpath(shutil.which("mpicc"))
    assert target in [os.path.realpath(m.mpicc) for m in report.mpis]


def test_elf_soname_agrees_with_readelf():
    for mpi_lib in ("/usr/lib/x86_64-linux-gnu/libmpich.so", "/usr/lib/x86_64-linux-gnu/openmpi/lib/libmpi.so"):
        if os.path.exists(mpi_lib):
            assert elf_soname(mpi_lib) == readelf_soname(mpi_lib)
    assert elf_soname(shutil.which("gcc")) is None          # an executable has no soname
    assert elf_soname(os.path.realpath(__file__)) is None   # not ELF at all


def test_identity_has_no_paths_and_is_stable(report):
    again = probe_host(timeout=10)
    for first, second in ((report.compilers, again.compilers), (report.mpis, again.mpis)):
        assert [x.identity() for x in first] == [x.identity() for x in second]
        for x in first:
            assert "/" not in json.dumps(x.identity())
    assert {m.name: m.identity()["libraries"] for m in report.mpis}["openmpi"]


def test_json_round_trip(report):
    doc = json.loads(json.dumps(report.to_json()))
    back = ProbeReport.from_json(doc)
    assert back.compilers == report.compilers and back.mpis == report.mpis
    assert doc["mpis"][0]["identity"] == report.mpis[0].identity()


def fake(directory, name, body):
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_hanging_and_broken_wrappers_are_reported_not_fatal(tmp_path):
    # the shell's child keeps the output pipe open: only killing the process group ends the probe
    hang_mpicc = fake(tmp_path / "hang", "mpicc", f"sleep 100 & echo $! > {tmp_path}/mpicc.pid\nwait\n")
    hang_gcc = fake(tmp_path / "hang", "gcc-99", f"sleep 100 & echo $! > {tmp_path}/gcc.pid\nwait\n")
    broken = fake(tmp_path / "broken", "mpicc", "echo 'cannot find my config' >&2\nexit 1\n")
    start = time.monotonic()
    report = probe_host(extra_dirs=[str(tmp_path / "hang"), str(tmp_path / "broken")], timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 20, "a hanging probe was not stopped"   # the fakes would hang for 100 s each
    for pid_file in ("mpicc.pid", "gcc.pid"):
        pid = int((tmp_path / pid_file).read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    text = "\n".join(report.problems)
    assert f"{hang_mpicc} --showme:version` did not finish within 1 s" in text
    assert f"{hang_gcc} -dumpfullversion" in text
    assert re.search(re.escape(broken) + r".*exited with 1: cannot find my config", text)
    assert sorted(m.name for m in report.mpis) == ["mpich", "openmpi"]
    assert by_name(report.compilers, "gcc").version == out("gcc", "-dumpfullversion").strip()


def test_declared_packages(tmp_path):
    ompi = re.search(r"^ompi:version:full:(\S+)", out("ompi_info", "--parsable"), re.M).group(1)
    gcc_version = out("gcc", "-dumpfullversion").strip()
    mpi = probe_declared_mpi("openmpi", "/usr", version=".".join(ompi.split(".")[:2]))
    assert (mpi.name, mpi.version, mpi.mpicc) == ("openmpi", ompi, "/usr/bin/mpicc.openmpi")
    assert probe_declared_compiler("gcc", "/usr", version=gcc_version.split(".")[0]).version == gcc_version

    missing = str(tmp_path / "opt" / "openmpi-5")
    with pytest.raises(HostError, match=re.escape(missing)):
        probe_declared_mpi("openmpi", missing)
    with pytest.raises(HostError, match=re.escape(missing)):
        probe_declared_compiler("gcc", missing)
    with pytest.raises(HostError, match="nothing usable found"):
        probe_declared_compiler("gcc", str(tmp_path))
    with pytest.raises(HostError) as err:
        probe_declared_mpi("openmpi", "/usr", version="3.1")
    assert "3.1" in str(err.value) and ompi in str(err.value)
    with pytest.raises(HostError) as err:
        probe_declared_compiler("gcc", "/usr", version="7.5")
    assert "7.5" in str(err.value) and gcc_version in str(err.value)
    with pytest.raises(ConfigError, match="unknown MPI 'openmpii'"):
        probe_declared_mpi("openmpii", "/usr")


@pytest.mark.parametrize("pin, version, expected", [
    ("4.1", "4.1.4", True), ("4.1.4", "4.1.4", True), ("4", "4.1.4", True), ("23.5", "23.5-0", True),
    ("4.1.4", "4.1.40", False), ("4.1", "4.10.1", False), ("4.1.4", "4.1", False), ("", "4.1", False),
])
def test_version_matches(pin, version, expected):
    assert version_matches(pin, version) is expected


def test_cli_json_and_table(tmp_path):
    cli = [sys.executable, "-m", "sitedist.cli.main", "probe"]
    doc = json.loads(subprocess.run(cli + ["--json"], check=True, capture_output=True, text=True).stdout)
    assert {m["name"] for m in doc["mpis"]} == {"openmpi", "mpich"}
    assert "gcc" in {c["name"] for c in doc["compilers"]}
    assert doc["target"]["name"] == host_target()["name"]
    table = subprocess.run(cli, check=True, capture_output=True, text=True).stdout
    for word in ("openmpi", "mpich", "/usr/bin/mpicc.mpich", doc["target"]["name"]):
        assert word in table
    # nothing at all found: an error, not an empty success
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "PATH": str(empty)})
    assert proc.returncode != 0 and "no compiler and no MPI found" in proc.stderr


def test_targets():
    host = archspec.cpu.host()
    assert host_target()["name"] == host.name and host_target()["family"] == platform.machine()
    assert resolve_target("host") == host.name
    assert resolve_target("generic") == platform.machine()
    assert resolve_target("x86_64_v3") == "x86_64_v3"
    with pytest.raises(ConfigError) as err:
        resolve_target("zen33")
    assert "zen3" in str(err.value)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 target names")
def test_target_flags_work_with_the_real_gcc(report, tmp_path):
    gcc = by_name(report.compilers, "gcc")
    assert target_flags("x86_64", gcc) == ()
    flags = target_flags("x86_64_v3", gcc)
    macros = out(gcc.cc, *flags, "-dM", "-E", "-x", "c", "/dev/null")
    assert "__AVX2__" in macros and "__AVX2__" not in out(gcc.cc, "-dM", "-E", "-x", "c", "/dev/null")
    (tmp_path / "t.c").write_text("int main(void) { return 0; }\n")
    subprocess.run([gcc.cc, *target_flags(resolve_target("host"), gcc), "-c", "t.c"], cwd=tmp_path, check=True)
    with pytest.raises(ConfigError, match="cannot build for CPU target zen4"):
        target_flags("zen4", type(gcc)(**{**gcc.__dict__, "version": "4.8.5"}))
