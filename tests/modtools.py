"""Shared test helpers: bash with real Lmod or Environment Modules 5, and synthetic store artifacts.

    sh = ModuleShell.lmod(modulepath, home=tmp_path)
    r = sh.run("snap before; module load zlib; zlib; snap loaded; module unload zlib; snap after")
    r.snaps["loaded"]["PATH"], r.stdout, r.returncode

``snap NAME`` records the environment at that point of the script; ``r.env`` is the environment at the end.
Scripts run with ``set -e`` in a clean environment (HOME is the test's directory, so user caches never leak
between tests).
"""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LMOD_INIT = "/usr/share/lmod/lmod/init/bash"
# tclint comes with the test extras: in the virtual environment of this Python, which need not be on PATH.
TCLINT = shutil.which("tclint", path=os.path.dirname(sys.executable)) or "tclint"
EM5_INSTALLER = Path(__file__).resolve().parents[1] / "scripts" / "install-environment-modules.sh"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
# Variables a module tool keeps for its own bookkeeping; everything else must be restored by unloading.
BOOKKEEPING_PREFIXES = ("_ModuleTable", "__LMOD", "_LMFILES_", "LOADEDMODULES", "__MODULES_", "_LMOD_",
                        "MODULES_LMALTNAME", "MODULES_LMCONFLICT", "MODULES_LMPREREQ", "MODULES_LMTAG",
                        "MODULES_LMNOTUASKED", "MODULES_LMVARIANT", "MODULES_LMSOURCESH", "MODULES_LMEXTRATAG",
                        "LMOD_FAMILY_", "MODULES_FAMILY_")


def tree_files(root, pattern="*"):
    """The files under a published module tree matching ``pattern`` (fnmatch, on the file name), as
    paths through ``root``: a generation's trees are symlinks to shared content directories, which
    ``Path.rglob`` does not enter (``module`` does)."""
    import fnmatch

    return sorted(Path(dirpath, name) for dirpath, _, names in os.walk(root, followlinks=True)
                  for name in names if fnmatch.fnmatch(name, pattern))


@dataclass
class ShellResult:
    returncode: int
    stdout: str
    stderr: str
    env: dict
    snaps: dict = field(default_factory=dict)


def _read_env(path):
    data = Path(path).read_bytes()
    return dict(item.split("=", 1) for item in data.decode().split("\0") if "=" in item)


def user_env(env):
    """``env`` without the module tool's bookkeeping variables."""
    return {k: v for k, v in env.items() if not k.startswith(BOOKKEEPING_PREFIXES)}


class ModuleShell:
    """Runs bash scripts with a module tool initialised and MODULEPATH set."""

    def __init__(self, init_file, modulepath, home, extra_env=None):
        self.init_file = str(init_file)
        self.modulepath = ":".join(map(str, modulepath)) if isinstance(modulepath, (list, tuple)) else str(modulepath)
        self.home = Path(home)
        self.extra_env = dict(extra_env or {})

    @classmethod
    def lmod(cls, modulepath, home, extra_env=None):
        return cls(LMOD_INIT, modulepath, home, extra_env)

    def base_env(self):
        env = {"PATH": CLEAN_PATH, "HOME": str(self.home), "LANG": "C.UTF-8", "USER": "root", "TERM": "dumb",
               "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        env.update(self.extra_env)
        return env

    def run(self, script, check=True, timeout=120):
        snapdir = Path(subprocess.check_output(["mktemp", "-d", f"{self.home}/snaps.XXXXXX"], text=True).strip())
        prelude = (f"source {self.init_file}\n"
                   f"export MODULEPATH={self.modulepath}\n"
                   f"snap() {{ env -0 > {snapdir}/\"$1\"; }}\n"
                   f"trap 'env -0 > {snapdir}/.end' EXIT\n"
                   "set -e\n")
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", prelude + script], env=self.base_env(),
                              capture_output=True, text=True, timeout=timeout, cwd=self.home)
        snaps = {p.name: _read_env(p) for p in snapdir.iterdir() if p.name != ".end"}
        end = _read_env(snapdir / ".end") if (snapdir / ".end").exists() else {}
        shutil.rmtree(snapdir)
        result = ShellResult(proc.returncode, proc.stdout, proc.stderr, end, snaps)
        if check and proc.returncode != 0:
            raise AssertionError(f"script failed ({proc.returncode}):\n{script}\n--- stdout:\n{proc.stdout}\n"
                                 f"--- stderr:\n{proc.stderr}")
        return result


def install_em5(directory):
    """Install Environment Modules 5 with scripts/install-environment-modules.sh; return (init file, None) or (None, why not)."""
    if not EM5_INSTALLER.is_file():
        return None, f"{EM5_INSTALLER} is missing"
    proc = subprocess.run(["bash", str(EM5_INSTALLER), str(directory)], capture_output=True, text=True,
                          timeout=600)
    init = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not os.path.isfile(init):
        return None, f"{EM5_INSTALLER} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
    return init, None


def make_prefix(store, name, version, aid, programs=None, man=True, pkgconfig=True, include=True, lib=True):
    """A synthetic artifact prefix; each program prints '<program> <version> <aid>'. Returns (prefix, subdirs)."""
    prefix = Path(store) / name / f"{version}-{aid}"
    subdirs = ["bin"]
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    for prog in programs or [name]:
        path = prefix / "bin" / prog
        path.write_text(f"#!/bin/sh\necho {prog} {version} {aid}\n")
        path.chmod(0o755)
    if man:
        (prefix / "share/man/man1").mkdir(parents=True, exist_ok=True)
        (prefix / f"share/man/man1/{name}.1").write_text(f".TH {name.upper()} 1\n.SH NAME\n{name} \\- test\n")
        subdirs.append("share/man")
    if pkgconfig:
        (prefix / "lib/pkgconfig").mkdir(parents=True, exist_ok=True)
        (prefix / f"lib/pkgconfig/{name}.pc").write_text(
            f"prefix={prefix}\nName: {name}\nDescription: test\nVersion: {version}\nCflags: -I${{prefix}}/include\n")
        subdirs.append("lib/pkgconfig")
    if lib:
        (prefix / "lib").mkdir(parents=True, exist_ok=True)
        subdirs.append("lib")
    if include:
        (prefix / "include").mkdir(parents=True, exist_ok=True)
        (prefix / f"include/{name}.h").write_text(f"#define {name.upper().replace('-', '_')}_TEST 1\n")
        subdirs.append("include")
    (prefix / ".sitedist").mkdir(exist_ok=True)
    (prefix / ".sitedist/complete").write_text("")
    return str(prefix), tuple(subdirs)


def make_host_prefix(store, name, version, aid, links, wrap=False):
    """A host package's store prefix: bin/ of symlinks to vendor programs ({'mpicc': '/usr/bin/mpicc.openmpi'}),
    or with ``wrap`` of scripts exec'ing them (as sitedist makes for MPI: launchers find their helpers from
    the name they were called by). Returns (prefix, subdirs)."""
    prefix = Path(store) / name / f"{version}-{aid}"
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    for link, target in links.items():
        path = prefix / "bin" / link
        if wrap:
            path.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
            path.chmod(0o755)
        else:
            path.symlink_to(target)
    return str(prefix), ("bin",)


@pytest.fixture(scope="session")
def em5_init(tmp_path_factory):
    """The init file of Environment Modules 5 installed by scripts/install-environment-modules.sh (once per test worker)."""
    init, why = install_em5(tmp_path_factory.mktemp("em5"))
    if init is None:
        pytest.skip(f"Environment Modules 5 could not be installed: {why}")
    return init

