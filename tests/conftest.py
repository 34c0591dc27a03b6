"""Shared fixtures: paths to the real sources and recipes, config writers, and the CLI."""

import hashlib
import importlib.util
import os
import stat
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = os.path.join(REPO, "sources")  # the example's mirror: SHA256SUMS committed, files by scripts/fetch_sources.py
RECIPES = os.path.join(REPO, "site_configs", "recipes")


def _fetch_sources():
    spec = importlib.util.spec_from_file_location("fetch_sources", os.path.join(REPO, "scripts", "fetch_sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    """Fill the source mirror from a neighbouring ../shared/sources/ when it lacks files (a copy, checked
    against the committed SHA256SUMS); Debian and PyPI are left to scripts/fetch_sources.py, which
    .ci/setup.sh runs."""
    config._sitedist_missing_sources = _fetch_sources().fill(SOURCES, debian=False, pypi=False)
    config.addinivalue_line("markers", "slow: takes minutes (CMake's own bootstrap); deselect with -m 'not slow'")


def pytest_report_header(config):
    if config._sitedist_missing_sources:
        return (f"sources missing from {SOURCES}: {', '.join(config._sitedist_missing_sources)}; "
                f"run: python3 scripts/fetch_sources.py")
    return None


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def open_path(path):
    """Let other users traverse (not list) every directory down to ``path``."""
    path = os.path.abspath(path)
    while path != "/":
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & stat.S_IXOTH:
            os.chmod(path, mode | stat.S_IXOTH)
        path = os.path.dirname(path)


def run_cli(*args, check=True, env=None, cwd=None, input=None):
    """Run the real ``sitedist`` command in a subprocess; returns CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, "-m", "sitedist.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"sitedist {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def tree_digest(*roots):
    """A checksum of everything under ``roots`` (names, modes, contents, link targets): equal before and
    after means nothing changed."""
    h = hashlib.sha256()
    for root in roots:
        root = str(root)
        if not os.path.lexists(root):
            h.update(f"absent {root}\0".encode())
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                h.update(f"{os.path.relpath(path, root)}\0{st.st_mode}\0".encode())
                if os.path.islink(path):
                    h.update(os.readlink(path).encode())
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        h.update(f.read())
            for d in dirnames:
                h.update(f"d {os.path.relpath(os.path.join(dirpath, d), root)}\0".encode())
    return h.hexdigest()


def site_config(tmp_path, packages, extra="", store=None, recipes=None, name="site.yml"):
    """Write a site config using the shipped recipes and the shared sources as mirror."""
    store = store or tmp_path / "store"
    recipe_dirs = [str(r) for r in (recipes or [])] + [RECIPES]
    lines = [f"store: {store}", f"recipes: [{', '.join(recipe_dirs)}]", f"mirrors: [{SOURCES}]", "packages:"]
    for pkg, body in packages.items():
        lines.append(f"  {pkg}: {body or '{}'}")
    text = "\n".join(lines) + "\n" + textwrap.dedent(extra)
    return write(tmp_path / name, text)


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory):
    """One store shared by all test workers of this run: builds are locked and hash-addressed, so
    workers asking for the same artifact build it once and reuse it."""
    root = tmp_path_factory.getbasetemp().parent / "shared-store"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def sources():
    missing = _fetch_sources().missing(SOURCES, _fetch_sources().read_sums(SOURCES))
    if missing:
        pytest.fail(f"sources missing from {SOURCES}: {', '.join(missing)}; run: python3 scripts/fetch_sources.py")
    return SOURCES


# --- fast unit tests and slow integration tests ---------------------------------------------------
# `pytest -m "not slow" tests` runs the unit tests of pure functions (script rendering and quoting,
# Lua/Tcl escaping, version order, name validation, the hash document, YAML loading, planning) in
# seconds. Every test in any other file is marked slow (they spawn the CLI, build real packages, run
# real module systems); in the files below, a test that builds is marked slow itself, and any test
# using the shared store or the real sources is slow too.
UNIT_FILES = {"test_hashing.py", "test_marked_yaml.py", "test_modules_plan.py", "test_names.py",
              "test_versions.py", "test_escaping.py", "test_recipe_scripts.py", "test_progress.py",
              "test_report.py", "test_scheduler.py", "test_caches.py", "test_plan_cache.py", "test_python.py"}
SLOW_FIXTURES = {"shared_store", "sources"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name not in UNIT_FILES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
