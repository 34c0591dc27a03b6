"""The `cpython` recipe, built for real from the Python 3.11 release tarball against the store's zlib,
bzip2, xz, libffi and sqlite (and the host's OpenSSL): its python3 imports the modules that need those
libraries without LD_LIBRARY_PATH, and every extension module finds its libraries in the store (RUNPATH)
or in the base system, never a system copy of a library the store built. With `python: cpython`, Python
packages are built with it, and `module load py-packaging` (real Lmod) puts its python3 on PATH with the
package importable and no PYTHONPATH (admin_docs/cpython.md, admin_docs/python.md)."""

import json
import os
import re
import subprocess

import pytest

from conftest import run_cli, site_config
from modtools import ModuleShell

pytestmark = [pytest.mark.slow, pytest.mark.hpc]   # builds CPython: minutes on 2 cores

# Libraries an extension module may take from the host: the C library and its companions, and OpenSSL
# (libssl-dev: the recipe uses the host's, for its security updates).
BASE_SYSTEM = re.compile(r"(linux-vdso|ld-linux-x86-64|libc|libm|libpthread|libdl|libutil|librt|libcrypt|"
                         r"libgcc_s|libssl|libcrypto)\.so")
STORE_LIBS = {"zlib": "libz.so", "bzip2": "libbz2.so", "xz": "liblzma.so", "libffi": "libffi.so",
              "sqlite": "libsqlite3.so"}


def plan(config):
    return {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}


@pytest.fixture(scope="module")
def site(shared_store, sources, tmp_path_factory):
    """cpython, and py-packaging (on py-flit-core) built with it, in the shared store; a Lua module tree."""
    tmp = tmp_path_factory.mktemp("cpython")
    modules = tmp / "modules"
    config = site_config(tmp, {"cpython": None, "py-packaging": None}, store=shared_store,
                         extra=f"python: cpython\nmodules: {{root: {modules}, formats: [lua]}}\n")
    run_cli("sync", "-j", "2", "--progress", "plain", config)
    return plan(config), modules, config


@pytest.fixture(scope="module")
def cpython(site):
    return site[0]


def test_python_imports_the_modules_built_on_store_libraries(cpython):
    prefix = cpython["cpython"]["prefix"]
    python = os.path.join(prefix, "bin", "python3")
    code = ("import ssl, sqlite3, zlib, bz2, lzma, ctypes, sys\n"
            "db = sqlite3.connect(':memory:'); db.execute('create table t(x)'); db.execute('insert into t values (42)')\n"
            "assert db.execute('select x from t').fetchone() == (42,)\n"
            "data = b'sitedist ' * 1000\n"
            "assert zlib.decompress(zlib.compress(data)) == bz2.decompress(bz2.compress(data)) == "
            "lzma.decompress(lzma.compress(data)) == data\n"
            "assert ctypes.CDLL(None).strlen(b'four') == 4\n"
            "maps = sorted({l.split()[-1] for l in open('/proc/self/maps') if '.so' in l})\n"
            "print(sys.version_info[:3], sys.prefix, sqlite3.sqlite_version, ssl.OPENSSL_VERSION, ','.join(maps), "
            "sep='|')\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}   # no LD_LIBRARY_PATH, no PYTHON*
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    version, sys_prefix, sqlite_version, openssl, maps = out.stdout.strip().split("|")
    assert version == "(3, 11, 2)" and sys_prefix == prefix, out.stdout
    assert sqlite_version == "3.40.1", out.stdout
    # The libraries the running interpreter loaded are the store's copies (Debian has the same sqlite 3.40.1).
    for dep, lib in STORE_LIBS.items():
        loaded = [m for m in maps.split(",") if os.path.basename(m).startswith(lib)]
        assert loaded and all(m.startswith(cpython[dep]["prefix"] + "/") for m in loaded), (dep, maps)
    assert openssl.startswith("OpenSSL 3."), out.stdout
    assert os.path.realpath(os.path.join(prefix, "bin", "python")) == os.path.realpath(python)


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    libs = {}
    for line in out.stdout.splitlines():
        if line.strip() == "statically linked":   # a module that needs no library (not even libc)
            continue
        m = re.match(r"\s*(\S+)(?: => (\S+|not found))?", line)
        if m:
            libs[m.group(1)] = m.group(2) or m.group(1)
    return libs


def test_extension_modules_resolve_into_the_store_or_the_base_system(cpython):
    prefix = cpython["cpython"]["prefix"]
    dynload = os.path.join(prefix, "lib", "python3.11", "lib-dynload")
    modules = sorted(f for f in os.listdir(dynload) if f.endswith(".so"))
    assert {m.split(".")[0] for m in modules} >= {"_ssl", "_sqlite3", "zlib", "_bz2", "_lzma", "_ctypes"}
    seen = {}
    for module in modules + [os.path.join("..", "..", "..", "bin", "python3.11")]:
        for name, path in ldd(os.path.join(dynload, module)).items():
            assert path != "not found", f"{module}: {name} not found"
            store = next((dep for dep, lib in STORE_LIBS.items() if name.startswith(lib)), None)
            if store:
                assert path.startswith(cpython[store]["prefix"] + "/"), f"{module}: {name} => {path}"
                seen[store] = module
            else:
                assert BASE_SYSTEM.match(os.path.basename(name)), f"{module}: {name} => {path}, not store or base"
    assert set(seen) == set(STORE_LIBS), seen


def test_python_packages_built_with_cpython_load_with_lmod(site, tmp_path):
    artifacts, modules, config = site
    python = artifacts["cpython"]["prefix"]
    packaging = artifacts["py-packaging"]["prefix"]
    assert os.path.isdir(os.path.join(packaging, "lib", "python3.11", "site-packages", "packaging"))
    sh = ModuleShell.lmod(modules / "lmod", home=tmp_path)
    r = sh.run("module load py-packaging\n"
               "command -v python3\n"
               "python3 -c 'import packaging, sqlite3, ssl, sys; print(packaging.__file__); print(sys.base_prefix)'\n"
               "echo \"PYTHONPATH=${PYTHONPATH-unset}\"\n"
               "python3 -E -c 'import packaging' 2>/dev/null && echo isolated-imports || echo isolated-fails\n")
    which, module_file, base_prefix, pythonpath, isolated = r.stdout.split()
    assert which == os.path.join(python, "bin", "python3"), r.stdout
    assert module_file.startswith(os.path.join(packaging, "lib", "python3.11", "site-packages") + "/"), r.stdout
    assert base_prefix == python, r.stdout
    # Importable through the SITEDIST_PYTHONPREFIXES hook of cpython's site-packages, not PYTHONPATH: -E
    # (ignore the environment) turns it off.
    assert pythonpath == "PYTHONPATH=unset" and isolated == "isolated-fails", r.stdout
    assert packaging in r.env["SITEDIST_PYTHONPREFIXES"].split(":")
    # Running the store's Python (as root here, who could write anywhere) left its sealed prefix as it was:
    # the hook was byte-compiled when it was installed.
    verify = run_cli("verify", config, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
