"""A real unprivileged user layers a personal stack on a site store that root built and that the user
can only read: site artifacts are reused in place (their prefixes in the user's RUNPATHs), the rest is
built in the user's home, the user's module tree loads with real Lmod next to the site's, the user's GC
touches only the user's store, and the site store stays byte-for-byte the same. Syncing into the site
store itself fails with the permission error and changes nothing."""

import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, SOURCES, open_path, run_cli, tree_digest, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root")

SITE_SOURCES = ("zlib_1.2.13.dfsg.orig.tar.bz2", "libpng1.6_1.6.39.orig.tar.gz")


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class User:
    name: str
    home: str
    argv: list     # how this user runs python
    env: dict

    def run(self, *argv, check=True):
        env = ["env", "-i", f"HOME={self.home}", f"USER={self.name}", "PATH=/usr/bin:/bin",
               *(f"{k}={v}" for k, v in self.env.items())]
        proc = subprocess.run(["runuser", "-u", self.name, "--", *env, *argv], cwd=self.home,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} as {self.name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sitedist(self, *args, check=True):
        return self.run(*self.argv, "-m", "sitedist.cli.main", *map(str, args), check=check)


@pytest.fixture(scope="module")
def work():
    """A directory every user may enter, with the code, recipes and sources copied into it (the checkout
    may live where other users cannot read it). Not under pytest's base temp: pytest makes that private
    again whenever a test session starts."""
    work = Path(tempfile.mkdtemp(prefix="sitedist-users-"))
    os.chmod(work, 0o755)
    open_path(work)
    for sub in ("sitedist", "modulefiles_templates"):
        shutil.copytree(os.path.join(REPO, sub), work / "code" / sub, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "setup.py"), work / "code")  # a root-owned checkout users can install from
    shutil.copytree(os.path.join(REPO, "site_configs", "recipes"), work / "recipes")
    sums = [line for line in open(os.path.join(SOURCES, "SHA256SUMS")) if line.split()[-1] in SITE_SOURCES]
    assert len(sums) == len(SITE_SOURCES), sums
    write(work / "mirror" / "SHA256SUMS", "".join(sums))
    for name in SITE_SOURCES:
        shutil.copy(os.path.join(SOURCES, name), work / "mirror" / name)
    for dirpath, dirnames, filenames in os.walk(work):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            extra = stat.S_IROTH | (stat.S_IXOTH if name in dirnames else 0)
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | extra)
    yield work
    shutil.rmtree(work)


def debian_venv():
    """A virtual environment made from Debian's /usr/bin/python3 with sitedist's dependencies: the one
    running the tests, else the checkout's .venv (what .ci/setup.sh makes), else None."""
    for prefix in (sys.prefix, os.path.join(REPO, ".venv")):
        try:
            with open(os.path.join(prefix, "pyvenv.cfg"), encoding="utf-8") as f:
                home = re.search(r"^home\s*=\s*(.*)$", f.read(), re.M).group(1).strip()
        except (OSError, AttributeError):
            continue
        if os.path.realpath(os.path.join(home, "python3")) == os.path.realpath("/usr/bin/python3"):
            return prefix
    return None


@pytest.fixture(scope="module")
def user(work):
    """An unprivileged user who runs sitedist with Debian's /usr/bin/python3, through a copy (hard links)
    of a virtual environment made from it, with PATH=/usr/bin:/bin: nothing of root's environment."""
    name = f"sdu{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        venv = debian_venv()
        env = {"PYTHONPATH": str(work / "code"), "PYTHONDONTWRITEBYTECODE": "1"}
        if venv:
            # The venv may live where the user cannot go (a checkout under /root): a copy in ``work``.
            shutil.copytree(venv, work / "venv", symlinks=True, copy_function=_link_or_copy)
            u = User(name=name, home=pwd.getpwnam(name).pw_dir, argv=[str(work / "venv" / "bin" / "python3")],
                     env=env)
        elif os.environ.get("CI"):
            pytest.fail("no virtual environment made from /usr/bin/python3 (bash .ci/setup.sh makes .venv): CI "
                        "runs the user-stack tests with Debian's own Python")
        else:
            # A developer's machine without .venv: a hard-linked copy of the Python running the tests.
            if sys.prefix != sys.base_prefix:
                pytest.fail(f"{sys.executable} (a virtual environment) cannot be run by other users")
            copy = work / "python"
            shutil.copytree(sys.base_prefix, copy, symlinks=True, copy_function=_link_or_copy)
            u = User(name=name, home=pwd.getpwnam(name).pw_dir,
                     argv=[str(copy / os.path.relpath(sys.executable, sys.base_prefix))],
                     env={**env, "LD_LIBRARY_PATH": str(copy / "lib")})
        u.run(*u.argv, "-c", "import sitedist.cli.main, yaml, jinja2, psutil, jsonschema")
        if venv:
            base = u.run(*u.argv, "-c", "import os, sys; print(os.path.realpath(sys._base_executable))")
            assert base.stdout.strip() == os.path.realpath("/usr/bin/python3"), base.stdout
        yield u
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


@pytest.fixture(scope="module")
def site(work):
    """The site: zlib built by root into a store that other users can read but not write."""
    site = work / "site"
    config = write(site / "site.yml", f"""
        store: {site}/store
        recipes: [{work}/recipes]
        mirrors: [{work}/mirror]
        packages:
          zlib: {{version: "1.2.13"}}
        modules: {{root: {site}/modules, formats: [lua]}}
        """)
    os.chmod(config, 0o644)
    run_cli("sync", config)
    return site


def user_stack(user, work, site, packages, extra=""):
    text = (f"upstreams: [{site}/store]\nrecipes: [{user.home}/recipes, {work}/recipes]\nmirrors: [{work}/mirror]\n"
            "packages:\n" + "".join(f"  {p}:\n" for p in packages) + extra)
    path = write(os.path.join(user.home, "stack.yml"), text)
    write(os.path.join(user.home, "recipes", "mytool.yml"), """
        name: mytool
        versions: {"1.0": {path: .}}
        build: commands
        commands: ['mkdir -p "$PREFIX/bin"', 'printf "#!/bin/sh\\necho mine\\n" > "$PREFIX/bin/mytool"',
                   'chmod +x "$PREFIX/bin/mytool"']
        """)
    subprocess.run(["chown", "-R", f"{user.name}:", os.path.join(user.home, "recipes"), path], check=True)
    return path


def lmod(user, commands):
    script = "source /usr/share/lmod/lmod/init/bash\n" + commands
    return user.run("bash", "-c", script)


def test_personal_stack_layers_on_the_site_store(work, user, site):
    site_zlib = next((site / "store" / "zlib").glob("1.2.13-*"))
    before = tree_digest(site)
    assert user.run("test", "-w", str(site / "store" / ".sitedist"), check=False).returncode != 0

    stack = user_stack(user, work, site, ["zlib", "libpng", "mytool"], "modules: {formats: [lua], keep: 1}\n")
    dry = user.sitedist("sync", "--dry-run", stack).stdout
    assert re.search(rf"\[upstream\] zlib 1\.2\.13 .* {re.escape(str(site_zlib))}$", dry, re.M), dry
    assert re.search(r"\[build\]\s+libpng 1\.6\.39", dry), dry
    out = user.sitedist("sync", stack).stdout
    own_modules = os.path.join(user.home, ".sitedist", "modules")
    assert f"to use them: module use {own_modules}/lmod" in out, out

    own_store = os.path.join(user.home, ".sitedist", "store")
    png = [os.path.join(own_store, "libpng", d) for d in os.listdir(os.path.join(own_store, "libpng"))]
    assert len(png) == 1 and os.path.exists(os.path.join(png[0], ".sitedist", "complete"))
    assert os.stat(png[0]).st_uid == pwd.getpwnam(user.name).pw_uid
    assert not os.path.exists(os.path.join(own_store, "zlib")), "the site's zlib is used in place, not copied"
    dynamic = subprocess.run(["readelf", "-d", os.path.join(png[0], "lib", "libpng16.so")], capture_output=True,
                             text=True, check=True).stdout
    assert f"{site_zlib}/lib" in re.search(r"\(RUNPATH\).*\[(.*)\]", dynamic).group(1).split(":")

    loaded = lmod(user, f"""
        module use {site}/modules/lmod
        module use {own_modules}/lmod
        module -t avail 2>&1
        module load libpng zlib mytool
        echo "zlib_home=$ZLIB_HOME"
        echo "pngfix=$(command -v pngfix)"
        mytool
        ldd "$(command -v pngfix)" | grep libz
        """).stdout
    assert f"{site}/modules/lmod:" in loaded and f"{own_modules}/lmod:" in loaded, loaded
    assert f"zlib_home={site_zlib}\n" in loaded
    assert f"pngfix={png[0]}/bin/pngfix\n" in loaded and "mine\n" in loaded
    assert f"{site_zlib}/lib/libz.so.1" in loaded, loaded

    # The user drops mytool; the user's GC removes it from the user's store and nothing of the site's.
    stack = user_stack(user, work, site, ["zlib", "libpng"], "modules: {formats: [lua], keep: 1}\n")
    user.sitedist("sync", stack)
    out = user.sitedist("gc", stack).stdout
    removed = re.findall(r"^removed (\S+) ", out, re.M)
    assert len(removed) == 1 and removed[0].startswith(f"{own_store}/mytool/"), out
    assert os.path.exists(png[0])
    assert tree_digest(site) == before, "the site store and module tree are unchanged"


def test_syncing_into_the_site_store_is_refused(work, user, site):
    before = tree_digest(site)
    bad = write(os.path.join(user.home, "bad.yml"), f"""
        extends: [{site}/site.yml]
        packages:
          libpng:
        """)
    for args in (("sync", bad), ("gc", bad)):
        proc = user.sitedist(*args, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert (f"error: permission denied: cannot write the store at {site}/store (as user {user.name}). "
                "Nothing was changed.") in proc.stderr
        assert f"list {site}/store under 'upstreams:'" in proc.stderr
    assert tree_digest(site) == before


def test_a_user_installs_sitedist_from_a_checkout_they_cannot_write(work, user):
    """pip builds from the root-owned checkout (setup.py builds in a temporary directory when it cannot
    write there), nothing is written into it, and the installed copy runs."""
    if not (work / "venv").exists():
        pytest.skip("needs a virtual environment made from /usr/bin/python3 (bash .ci/setup.sh makes .venv)")
    before = tree_digest(work / "code")
    target = os.path.join(user.home, "installed")
    user.run(*user.argv, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-index",
             "--no-build-isolation", "--target", target, str(work / "code"))
    assert tree_digest(work / "code") == before, "the install wrote into the checkout"
    ran = user.run("env", f"PYTHONPATH={target}", *user.argv, "-c",
                   "import sitedist.cli.main, sitedist; print(sitedist.__file__)")
    assert ran.stdout.strip() == os.path.join(target, "sitedist", "__init__.py")
    assert user.run("env", f"PYTHONPATH={target}", *user.argv, "-m", "sitedist.cli.main", "--version").stdout \
        .startswith("sitedist, version ")
