"""Python packages (admin_docs/python.md): the host Python as a host package, `build: python` with its
import check and its missing-dependency errors, and modules and profiles that make packages importable
without PYTHONPATH, for their own Python only. The real tests build with Debian's /usr/bin/python3 and
load the modules with real Lmod (as an unprivileged user) and Environment Modules 5."""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import RECIPES, SOURCES, open_path, run_cli, site_config, tree_digest, write
from modtools import ModuleShell, em5_init  # noqa: F401  (a fixture)
from sitedist.errors import ConfigError
from sitedist.host.python import HostPython
from sitedist.host.toolchains import Host, Toolchain, _compiler_package, python_package, tool_package
from sitedist.host.tools import Tool
from sitedist.spec.config import load_config
from sitedist.spec.recipe import default_imports
from sitedist.spec.resolve import Resolver
from test_hashing import GCC, GOLDEN, TOOLS

DEBIAN_PYTHON = "/usr/bin/python3"
BUILD_ENV = {**os.environ, "PATH": "/usr/bin:/bin"}   # the host Python is Debian's, whatever runs the tests


def host_python(version="3.11.2", executable="/usr/bin/python3.11"):
    return HostPython(name="python", implementation="cpython", version=version, abi="cp311",
                      platform="linux-x86_64", executable=executable, prefix=os.path.dirname(executable),
                      found=executable)


def resolve(tmp_path, packages, python=host_python(), extra="", recipes=None, tools=TOOLS):
    config = load_config(site_config(tmp_path, packages, extra, recipes=recipes))
    gcc = _compiler_package(GCC)
    host = Host(packages={"gcc": gcc}, toolchains={"default": Toolchain("default", gcc, default=True)},
                tools={name: [tool_package(t)] for name, t in tools.items()},
                pythons=[python_package(python)] if python else [])
    return Resolver(config, host, {"generic": "x86_64"}).plan()


# --- the hash: a Python package records its Python's identity, never its path ------------------------

def test_python_identity_in_the_hash_and_other_ids_unchanged(tmp_path):
    plan = resolve(tmp_path, {"py-packaging": None, "zlib": None, "libpng": None})
    ids = {n.name: n.aid for n in plan.nodes}
    assert {k: ids[k] for k in ("zlib", "libpng", "gcc", "make")} == {k: GOLDEN[k] for k in ("zlib", "libpng", "gcc",
                                                                                            "make")}, \
        "a config with Python packages must not change the ids of the other packages"
    pkg = next(n for n in plan.nodes if n.name == "py-packaging")
    assert pkg.doc["python"] == {"implementation": "cpython", "version": "3.11.2", "abi": "cp311",
                                 "platform": "linux-x86_64"}
    assert [d.name for d in pkg.deps["python"]] == ["python"] and pkg.deps["python"][0].kind == "python"
    assert 'sitedist_pep517.py" build --prefix "$PREFIX"' in pkg.doc["script"]
    assert "def check_import(prefix, modules):" in pkg.doc["script"], "the frontend is part of the hashed script"

    moved = {n.name: n.aid for n in resolve(tmp_path, {"py-packaging": None, "zlib": None, "libpng": None},
                                            host_python(executable="/opt/py/bin/python3.11")).nodes}
    assert moved == ids, "where the interpreter lives must not enter any id"
    newer = {n.name: n.aid for n in resolve(tmp_path, {"py-packaging": None, "zlib": None, "libpng": None},
                                            host_python(version="3.11.9")).nodes}
    assert newer["py-packaging"] != ids["py-packaging"] and newer["py-flit-core"] != ids["py-flit-core"]
    assert newer["zlib"] == ids["zlib"] and newer["libpng"] == ids["libpng"]


def test_every_shipped_python_recipe_resolves(tmp_path):
    names = sorted(f[:-4] for f in os.listdir(RECIPES) if f.startswith("py-") and f.endswith(".yml"))
    assert {"py-setuptools", "py-flit-core", "py-packaging", "py-meson", "py-meson-python", "py-pyproject-metadata",
            "py-cython", "py-pkgconfig", "py-poetry-core"} <= set(names)
    ninja = Tool(name="ninja", version="1.11.1", prefix="/usr", executables=(("ninja", "/usr/bin/ninja"),))
    pkgconf = Tool(name="pkg-config", version="1.8.1", prefix="/usr", executables=(("pkg-config", "/usr/bin/pkg-config"),))
    plan = resolve(tmp_path, {n: None for n in names}, tools={**TOOLS, "ninja": ninja, "pkg-config": pkgconf})
    for node in plan.nodes:
        if node.name.startswith("py-"):
            assert node.recipe.build == "python" and node.doc["python"]["version"] == "3.11.2", node.name
    mesonpy = next(n for n in plan.nodes if n.name == "py-meson-python")
    assert {d.name for d in mesonpy.deps["run"]} == {"py-meson", "py-pyproject-metadata"}
    assert mesonpy.doc["tools"] == {"ninja": {"version": "1.11.1"}}


# Golden ids of Python packages with a fixed host Python (cpython 3.11.2, cp311, linux-x86_64): a change to
# sitedist's PEP 517 frontend or to how the python style renders its script changes them (and only them).
# Change them on purpose and say so in admin_docs/hash-protocol.md: every site rebuilds its Python packages.
PYTHON_GOLDEN = {"python": "co4teqxtl6wt6xozpk7g", "py-flit-core": "kiahkkvvyfpahk4gxhza",
                 "py-packaging": "lcpvzfj42xnopfwmyqtb"}


def test_python_packages_golden_ids(tmp_path):
    ids = {n.name: n.aid for n in resolve(tmp_path, {"py-packaging": None}).nodes}
    assert {k: ids[k] for k in PYTHON_GOLDEN} == PYTHON_GOLDEN, f"Python package ids changed: {ids}"


def test_no_python_on_the_host_is_an_error_naming_the_recipe(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve(tmp_path, {"py-packaging": None}, python=None)
    text = str(err.value)
    assert "no python3 was found" in text and os.path.join(RECIPES, "py-flit-core.yml") in text, text
    assert "python: cpython" in text   # the hint names the way out


def test_the_python_of_python_packages_can_be_a_package(tmp_path):
    recipes = tmp_path / "recipes"
    write(recipes / "mypython.yml", """
        name: mypython
        versions: {"3.11.9": {path: .}}
        provides: [python]
        build: commands
        commands: ['mkdir -p "$PREFIX/bin"']
        """)
    plan = resolve(tmp_path, {"py-packaging": None}, extra="python: mypython\n", recipes=[recipes])
    pkg = next(n for n in plan.nodes if n.name == "py-packaging")
    mine = next(n for n in plan.nodes if n.name == "mypython")
    assert pkg.doc["python"] == {"name": "mypython", "version": "3.11.9", "id": mine.aid}
    assert pkg.deps["python"] == [mine] and not any(n.kind == "python" for n in plan.nodes)
    with pytest.raises(ConfigError, match=r"python: zlib: the recipe .*zlib\.yml does not provide a Python"):
        resolve(tmp_path / "b", {"py-packaging": None, "zlib": None}, extra="python: zlib\n")


def test_python_style_fields_belong_to_the_python_style(tmp_path):
    write(tmp_path / "recipes" / "cfoo.yml", """
        name: cfoo
        versions: {"1.0": {path: .}}
        build: autotools
        import: [cfoo]
        """)
    with pytest.raises(ConfigError, match=r"cfoo\.yml:4.*'import' is a setting of the python build style"):
        resolve(tmp_path, {"cfoo": None}, recipes=[tmp_path / "recipes"])
    assert default_imports("py-flit-core") == ("flit_core",) and default_imports("py-numpy") == ("numpy",)


def test_modules_of_python_packages_use_sitedist_pythonprefixes_never_pythonpath():
    from sitedist.modules.entry import ModuleEntry
    from sitedist.modules.render import prefix_env

    pure = ModuleEntry("py-x", "1.0", "/s/py-x/1.0-a", "a", subdirs=("bin", "lib", "lib/python3.11/site-packages"))
    assert prefix_env(pure) == (("prepend", "PATH", "{prefix}/bin"), ("prepend", "SITEDIST_PYTHONPREFIXES", "{prefix}"))
    bindings = ModuleEntry("hdf5", "1.0", "/s/hdf5/1.0-b", "b", subdirs=("include", "lib", "lib/python3.11/site-packages"))
    assert ("prepend", "CMAKE_PREFIX_PATH", "{prefix}") in prefix_env(bindings)   # a C library with Python bindings
    assert not any(var == "PYTHONPATH" for _, var, _ in prefix_env(bindings))


def test_frontend_names_missing_python_headers(tmp_path, monkeypatch):
    import sysconfig

    from sitedist.spec import python_frontend as fe

    monkeypatch.setenv("SITEDIST_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": str(tmp_path / "include")})
    with pytest.raises(fe.Failure):
        fe.no_headers()
    assert "install them (Debian: apt-get install python3-dev)" in (tmp_path / "diagnosis").read_text()
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "Python.h").write_text("")
    fe.no_headers()   # headers present: nothing to say


def test_frontend_markers_and_requirements():
    from sitedist.spec import python_frontend as fe

    here = "%d.%d" % __import__("sys").version_info[:2]
    assert fe.marker_holds(f'python_version == "{here}"')
    assert not fe.marker_holds(f'python_version < "{here}"')
    assert fe.marker_holds(f'python_version >= "3.8" and (os_name == "posix" or sys_platform == "win32")')
    assert not fe.marker_holds('sys_platform == "win32" or implementation_name == "pypy"')
    assert fe.marker_holds("this is not a marker ((")   # unreadable: the requirement is kept
    assert fe.canonical("Flit_Core") == fe.canonical("flit-core") == "flit-core"


# --- real builds with Debian's Python ----------------------------------------------------------------

@pytest.fixture(scope="module")
def pysite():
    """py-packaging (on py-flit-core) and py-setuptools built with Debian's python3 into a store every user
    may read (not under pytest's private base directory), with Lua and Tcl trees and a profile."""
    if not os.path.exists(DEBIAN_PYTHON):
        pytest.skip("no /usr/bin/python3")
    site = Path(tempfile.mkdtemp(prefix="sitedist-python-"))
    os.chmod(site, 0o755)
    open_path(site)
    config = write(site / "site.yml", f"""
        store: {site}/store
        recipes: [{RECIPES}]
        mirrors: [{SOURCES}]
        packages:
          py-packaging:
          py-setuptools:
        modules: {{root: {site}/modules}}
        profiles:
          py: {{packages: [py-packaging, py-setuptools], root: {site}/profiles/py}}
        """)
    out = run_cli("sync", config, env=BUILD_ENV).stdout
    yield site, config, out
    shutil.rmtree(site, ignore_errors=True)


def _one(pattern):
    found = sorted(Path("/").glob(pattern.lstrip("/")))
    assert len(found) == 1, (pattern, found)
    return found[0]


@pytest.mark.slow
def test_python_packages_build_with_the_host_python(pysite):
    site, config, out = pysite
    assert re.search(r"^built 5: .*python/3\.11\.\d+-", out, re.M), out   # gcc, the host python, 3 packages
    python = _one(f"{site}/store/python/*")
    assert os.path.realpath(python / "bin" / "python3") == os.path.realpath(DEBIAN_PYTHON)
    cfg = (python / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg, cfg
    packaging = _one(f"{site}/store/py-packaging/*")
    site_packages = packaging / "lib" / "python3.11" / "site-packages"
    assert (site_packages / "packaging" / "version.py").is_file()
    assert list((site_packages / "packaging" / "__pycache__").glob("version.cpython-311.pyc")), \
        "byte-compiled at install: the artifact is read-only afterwards"
    assert (site_packages / "packaging-24.1.dist-info" / "INSTALLER").read_text() == "sitedist\n"
    log = run_cli("log", config, "py-packaging", env=BUILD_ENV).stdout
    assert f"imported packaging from {site_packages}/packaging/__init__.py" in log, log
    assert "build backend flit_core.buildapi" in log
    # the profile is a virtual environment over the host Python whose site-packages is the merged forest
    check = subprocess.run([f"{site}/profiles/py/bin/python3", "-c",
                            "import packaging, setuptools, sys; print(sys.prefix); print(packaging.__file__)"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == [f"{site}/profiles/py",
                                    f"{site}/profiles/py/lib/python3.11/site-packages/packaging/__init__.py"]
    # a develop environment over it: its python3 is a venv whose site-packages holds the stack and your own
    run_cli("develop", config, "py", site / "dev", env=BUILD_ENV)
    dev = subprocess.run(["bash", "--noprofile", "--norc", "-c",
                          f"source {site}/dev/activate\n"
                          'echo "X = 2" > "$SITEDIST_ENV/lib/python3.11/site-packages/mine.py"\n'
                          "command -v python3\n"
                          "python3 -c 'import mine, packaging, sys; print(sys.prefix, mine.X, packaging.__file__)'"],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/")
    assert dev.returncode == 0, dev.stderr
    assert dev.stdout.split() == [f"{site}/dev/bin/python3", f"{site}/dev", "2",
                                  f"{site}/dev/lib/python3.11/site-packages/packaging/__init__.py"], dev.stdout
    again = run_cli("sync", config, env=BUILD_ENV).stdout
    assert "nothing to build" in again and "modules: unchanged" in again, again


@pytest.fixture(scope="module")
def pyuser(pysite):
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    name = f"sdp{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield name, pwd.getpwnam(name).pw_dir
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def as_user(user, script):
    name, home = user
    proc = subprocess.run(["runuser", "-u", name, "--", "env", "-i", f"HOME={home}", f"USER={name}",
                           "PATH=/usr/bin:/bin", "bash", "--noprofile", "--norc", "-c",
                           "source /usr/share/lmod/lmod/init/bash\n" + script],
                          capture_output=True, text=True, cwd=home, timeout=120)
    return proc


@pytest.mark.slow
def test_module_load_makes_import_work_for_its_python_only(pysite, pyuser):
    site, _, _ = pysite
    python = _one(f"{site}/store/python/*")
    packaging = _one(f"{site}/store/py-packaging/*")
    # a prefix with site-packages for another Python version, and for this one: only the latter is seen
    other = Path(tempfile.mkdtemp(prefix="sitedist-otherpy-", dir=site))
    for version, module in (("3.99", "only_for_399"), ("3.11", "for_311")):
        write(other / "lib" / f"python{version}" / "site-packages" / f"{module}.py", "X = 1\n")
    for dirpath, dirnames, filenames in os.walk(other):
        for n in dirnames + filenames:
            os.chmod(os.path.join(dirpath, n), 0o755)
    os.chmod(other, 0o755)
    r = as_user(pyuser, f"""
        module use {site}/modules/lmod
        module load py-packaging
        echo "python3: $(command -v python3)"
        echo "PYTHONPATH=${{PYTHONPATH-unset}}"
        python3 -c 'import packaging, sys; print("packaging:", packaging.__file__); print("prefix:", sys.prefix)'
        /usr/bin/python3 -c 'import packaging' 2>&1 | tail -n1 | sed 's/^/system: /'
        python3 -m venv --without-pip "$HOME/venv"
        "$HOME/venv/bin/python" -c 'import packaging' 2>&1 | tail -n1 | sed 's/^/venv: /'
        SITEDIST_PYTHONPREFIXES={other}:$SITEDIST_PYTHONPREFIXES python3 -c 'import for_311; print("for_311: ok")'
        SITEDIST_PYTHONPREFIXES={other}:$SITEDIST_PYTHONPREFIXES python3 -c 'import only_for_399' 2>&1 | tail -n1 \
            | sed 's/^/3.99: /'
        python3 -I -c 'import packaging' 2>&1 | tail -n1 | sed 's/^/isolated: /'
        module unload py-packaging
        module list 2>&1 | tr -s ' \\n' ' ' | sed 's/^/after unload: /'; echo
        echo "unloaded python3: $(command -v python3)"
        """)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"python3: {python}/bin/python3\n" in out, out
    assert "PYTHONPATH=unset" in out
    assert f"packaging: {packaging}/lib/python3.11/site-packages/packaging/__init__.py" in out, out
    assert f"prefix: {python}\n" in out
    assert "system: ModuleNotFoundError: No module named 'packaging'" in out, "the system Python must not see it"
    assert "venv: ModuleNotFoundError: No module named 'packaging'" in out, "a user's venv must not be polluted"
    assert "for_311: ok" in out and "3.99: ModuleNotFoundError: No module named 'only_for_399'" in out, out
    assert "isolated: ModuleNotFoundError" in out, "-I ignores SITEDIST_PYTHONPREFIXES as it ignores PYTHONPATH"
    assert "No modules loaded" in out and "unloaded python3: /usr/bin/python3" in out, out


@pytest.mark.slow
def test_environment_modules_5_loads_python_packages_from_the_tcl_tree(pysite, em5_init, tmp_path):
    site, _, _ = pysite
    packaging = _one(f"{site}/store/py-packaging/*")
    r = ModuleShell(em5_init, f"{site}/modules/tcl", tmp_path).run(
        "module load py-packaging\n"
        "python3 -c 'import packaging; print(packaging.__file__)'\n"
        "command -v python3\n")
    assert f"{packaging}/lib/python3.11/site-packages/packaging/__init__.py" in r.stdout, r.stdout + r.stderr
    assert "/store/python/" in r.stdout


def _project(path, name, backend="flit", module_text="", requires=None):
    if backend == "flit":
        system = f'requires = {requires if requires is not None else ["flit_core >=3.2"]!r}\n' \
                 'build-backend = "flit_core.buildapi"\n'
    else:
        system = f'requires = {requires if requires is not None else []!r}\nbuild-backend = "{backend}"\n'
    write(path / "pyproject.toml", f"[build-system]\n{system}\n[project]\nname = \"{name}\"\nversion = \"1.0\"\n"
                                   f"description = \"a test package\"\n")
    write(path / f"{name}.py", module_text or "X = 1\n")


def _recipe(recipes, name, project, depends="", extra=""):
    write(recipes / f"{name}.yml", f"""
        name: {name}
        versions: {{"1.0": {{path: {project}}}}}
        {depends}
        build: python
        {extra}
        """)


@pytest.mark.slow
def test_bad_python_recipes_fail_with_what_to_fix(pysite, tmp_path):
    site, _, _ = pysite
    recipes = tmp_path / "recipes"
    _project(tmp_path / "nobackend", "nobackend")
    _recipe(recipes, "py-nobackend", tmp_path / "nobackend")                     # flit_core not a dependency
    _project(tmp_path / "noimport", "noimport", backend="setuptools.build_meta")  # imports setuptools, undeclared
    _recipe(recipes, "py-noimport", tmp_path / "noimport")
    _project(tmp_path / "needsdep", "needsdep", module_text="import packaging\n")
    _recipe(recipes, "py-needsdep", tmp_path / "needsdep", "depends: {build: [py-flit-core, py-packaging]}")
    _project(tmp_path / "othername", "othername")
    _recipe(recipes, "py-othername", tmp_path / "othername", "depends: {build: [py-flit-core]}",
            "import: [wrongname]")
    modules_before = tree_digest(site / "modules")
    cases = {
        "py-nobackend": r"missing build dependency: pyproject\.toml's build-system requires flit_core >=3\.2, which no "
                        r"dependency of the recipe provides",
        "py-noimport": r"missing build dependency: the build backend setuptools\.build_meta cannot be imported: no module "
                       r"named 'setuptools'.*\(e\.g\. py-setuptools\)",
        "py-needsdep": r"import check: 'import needsdep' fails after install: it needs the module 'packaging', which "
                       r"none of the recipe's run dependencies provides.*'depends: run:'",
        "py-othername": r"import check: 'import wrongname' fails after install: the package installed no module "
                        r"'wrongname'",
    }
    for name, expected in cases.items():
        config = write(tmp_path / f"{name}.yml", f"""
            store: {site}/store
            recipes: [{recipes}, {RECIPES}]
            mirrors: [{SOURCES}]
            packages: {{{name}: }}
            modules: {{root: {site}/modules}}
            """)
        proc = run_cli("sync", config, env=BUILD_ENV, check=False)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, text
        assert re.search(rf"{name} 1\.0 failed: recipe {re.escape(str(recipes / name))}\.yml: {expected}", text), text
        assert "last lines of the log" not in text, "a diagnosed failure shows its message, not the log's tail"
        log = re.search(r"log \(the whole output\): (\S+)", text).group(1)
        assert "sitedist_pep517.py build" in Path(log).read_text()
        assert not list((site / "store" / name).glob("1.0-*")) if (site / "store" / name).exists() else True
    assert tree_digest(site / "modules") == modules_before, "a failed build publishes nothing"
