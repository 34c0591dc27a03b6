"""Garbage collection with real builds: what no root refers to goes (bytes reported as du measures
them), what a root refers to stays with its dependencies, retention prunes profile generations first,
another config's module tree keeps its artifacts, and a GC during a sync leaves that sync's artifacts.
GC and verify refuse a directory that is not a store and sweep only what is named like an artifact; the
admins of a group store collect after one another; a generation pruned while GC reads it is skipped; a
sync registering its root does not import the collector."""

import grp
import importlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_cli, site_config, tree_digest, write
from storetools import config as synthetic_config, synthetic

from sitedist.core.locks import StoreLock
from sitedist.core.store import Store, remove_tree

APP = r"""
#include <stdio.h>
#include <zlib.h>
int main(void) { printf("zlib %s\n", zlibVersion()); return 0; }
"""


def recipes(tmp_path):
    """app and slow compile against zlib; junk is 3 MB of data; toy is nothing much."""
    d = tmp_path / "recipes"
    write(d / "src" / "app.c", APP)
    compile_app = '$CC $CPPFLAGS -o "$PREFIX/bin/app" app.c $LDFLAGS -lz'
    write(d / "app.yml", f"""
        name: app
        versions: {{"1.0": {{path: src}}}}
        depends: {{link: [zlib]}}
        build: commands
        commands: ['mkdir -p "$PREFIX/bin"', '{compile_app}']
        """)
    write(d / "slow.yml", f"""
        name: slow
        versions: {{"1.0": {{path: src}}}}
        depends: {{link: [zlib]}}
        build: commands
        commands:
          - touch {tmp_path}/started
          - while [ ! -e {tmp_path}/release ]; do sleep 0.1; done
          - mkdir -p "$PREFIX/bin"
          - '{compile_app}'
        """)
    write(d / "junk.yml", """
        name: junk
        versions: {"1.0": {path: src}}
        build: commands
        commands: ['mkdir -p "$PREFIX/share"', 'head -c 3000000 /dev/urandom > "$PREFIX/share/junk.bin"']
        """)
    write(d / "toy.yml", """
        name: toy
        versions: {"1.0": {path: src}}
        build: commands
        commands:
          - mkdir -p "$PREFIX/bin"
          - printf '#!/bin/sh\\necho toy\\n' > "$PREFIX/bin/toy"
          - chmod +x "$PREFIX/bin/toy"
        """)
    return d


def config(tmp_path, name, packages, extra="", store=None):
    return site_config(tmp_path, {p: None for p in packages}, store=store or tmp_path / "store",
                       recipes=[tmp_path / "recipes"], name=name, extra=extra)


def profile(tmp_path, packages):
    return f"profiles:\n  p: {json.dumps({'packages': packages, 'root': str(tmp_path / 'prof' / 'p')})}\n"


def prefix(store, name):
    found = [p for p in (store / name).glob("*-*")] if (store / name).is_dir() else []
    assert len(found) <= 1, found
    return str(found[0]) if found else None


def du(*paths):
    out = subprocess.run(["du", "-s", "-B1", "-c", *paths], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def freed(out):
    return int(re.search(r"(?:would free|freed) \S+ \S+ \((\d+) bytes\)", out).group(1))


def test_unreferenced_goes_referenced_and_dependencies_stay(tmp_path, sources):
    recipes(tmp_path)
    store = tmp_path / "store"
    cfg = config(tmp_path, "site.yml", ["app", "junk"], profile(tmp_path, ["app"]))
    run_cli("sync", cfg)
    # gcc and make (zlib's build tool) are host packages only builds used: nothing refers to them.
    app, zlib, junk, gcc, make = (prefix(store, n) for n in ("app", "zlib", "junk", "gcc", "make"))
    expected = du(junk, gcc, make)
    before = tree_digest(store)

    dry = run_cli("gc", cfg, "--dry-run", "-v").stdout
    assert f"root: profile {tmp_path}/prof/p (1 prefixes)" in dry
    assert f"would remove {junk} (2.9 MiB)" in dry and f"would remove {gcc}" in dry and f"would remove {make}" in dry
    assert app not in dry and zlib not in dry
    assert freed(dry) == expected and "dry run: nothing was removed" in dry
    assert tree_digest(store) == before, "a dry run changes nothing"

    # A root a user registers keeps junk until it is removed again.
    sizes = {junk: du(junk), gcc: du(gcc), make: du(make)}
    assert "root paper: 1 artifacts kept" in run_cli("gc", cfg, "--add-root", "paper", junk).stdout
    out = run_cli("gc", cfg).stdout
    assert f"removed {gcc}" in out and f"removed {make}" in out and f"{store}: removed 2 artifacts" in out, out
    assert freed(out) == sizes[gcc] + sizes[make], out
    assert os.path.exists(junk)
    run_cli("gc", cfg, "--remove-root", "paper")
    out = run_cli("gc", cfg).stdout
    assert f"removed {junk} (2.9 MiB)" in out and f"{store}: removed 1 artifacts" in out, out
    assert freed(out) == sizes[junk] and sum(sizes.values()) == expected
    assert not os.path.exists(junk) and not os.path.exists(gcc) and not os.path.exists(make)
    assert Store.is_complete(app) and Store.is_complete(zlib), "the profile's artifact and its dependency stay"
    assert subprocess.run([f"{tmp_path}/prof/p/bin/app"], capture_output=True, text=True,
                          check=True).stdout == "zlib 1.2.13\n"
    assert not list((store / ".sitedist" / "trash").glob("*")), "the trash is emptied"
    assert "removed 0 artifacts" in run_cli("gc", cfg).stdout


def test_retention_prunes_profile_generations_first(tmp_path, sources):
    recipes(tmp_path)
    store = tmp_path / "store"
    old = config(tmp_path, "old.yml", ["junk", "toy"], profile(tmp_path, ["junk"]))
    new = config(tmp_path, "new.yml", ["toy"], profile(tmp_path, ["toy"]))
    run_cli("sync", old)
    run_cli("sync", new)
    junk = prefix(store, "junk")
    assert "removed 1 artifacts" in run_cli("gc", new).stdout       # gcc; generation 1 still needs junk
    assert os.path.exists(junk)
    assert "removed 0 artifacts" in run_cli("gc", new, "--older-than", "30").stdout   # both are fresh
    dry = run_cli("gc", new, "--keep", "1", "--dry-run").stdout
    assert f"would prune profile generations 1 of {tmp_path}/prof/p" in dry and f"would remove {junk}" in dry
    assert re.search(r"^\s+1\s", run_cli("profile", new, "list").stdout, re.M) and os.path.exists(junk)
    out = run_cli("gc", new, "--keep", "1").stdout
    assert f"pruned profile generations 1 of {tmp_path}/prof/p" in out and f"removed {junk}" in out
    assert not os.path.exists(junk)
    gens = run_cli("profile", new, "list").stdout
    assert re.search(r"^\*\s+2\s", gens, re.M) and not re.search(r"^\s+1\s", gens, re.M), gens


def test_another_configs_module_tree_keeps_its_artifacts(tmp_path, sources):
    recipes(tmp_path)
    store, modules = tmp_path / "store", tmp_path / "modules-a"
    a = config(tmp_path, "a.yml", ["junk"], f"modules: {{root: {modules}, formats: [lua]}}\n")
    b = config(tmp_path, "b.yml", ["toy"], profile(tmp_path, ["toy"]))
    run_cli("sync", a)
    run_cli("sync", b)
    junk = prefix(store, "junk")
    assert "removed 0 artifacts" in run_cli("gc", a).stdout   # and registers a's module tree in the store
    out = run_cli("gc", b, "-v").stdout
    assert f"root: modules {modules}" in out and "removed 0 artifacts" in out, out
    subprocess.run(["rm", "-rf", str(modules)], check=True)
    out = run_cli("gc", b).stdout
    assert f"forgot modules {modules}: it no longer exists" in out and f"removed {junk}" in out


def test_incomplete_prefixes_go_unless_their_build_runs(tmp_path, sources):
    recipes(tmp_path)
    store = Store(str(tmp_path / "store"))
    store.init()
    dead, running = store.prefix("zlib", "1.2.13", "a" * 20), store.prefix("zlib", "1.2.13", "b" * 20)
    for p in (dead, running):
        write(os.path.join(p, "lib", "half-written.so"), "x" * 10000)
    cfg = config(tmp_path, "site.yml", ["toy"])
    with StoreLock(store.lock_path("zlib", "1.2.13", "b" * 20), what="building zlib (test)"):
        out = run_cli("gc", cfg).stdout
    assert f"removed {dead} (" in out and "incomplete)" in out and not os.path.exists(dead)
    assert f"kept {running}: its build is running" in out and os.path.exists(running)
    assert f"removed {running}" in run_cli("gc", cfg).stdout   # its builder is gone now


def test_gc_during_a_sync_leaves_what_the_sync_uses(tmp_path, sources):
    recipes(tmp_path)
    store = tmp_path / "store"
    run_cli("sync", config(tmp_path, "first.yml", ["zlib", "junk"]))   # nothing refers to these afterwards
    zlib, junk = prefix(store, "zlib"), prefix(store, "junk")
    cfg = config(tmp_path, "site.yml", ["slow"])
    sync = subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", "--progress", "plain", cfg],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "started").exists():
            assert sync.poll() is None, sync.stdout.read()
            assert time.monotonic() < deadline, "the slow build did not start"
            time.sleep(0.1)
        building = prefix(store, "slow")
        assert building and not Store.is_complete(building)
        out = run_cli("gc", cfg).stdout
        assert f"removed {junk}" in out and "removed 1 artifacts" in out, out
        assert Store.is_complete(zlib) and os.path.isdir(building), "the sync's dependency and build stay"
    finally:
        (tmp_path / "release").touch()
        output = sync.communicate(timeout=300)[0]
    assert sync.returncode == 0, output
    slow = prefix(store, "slow")
    assert Store.is_complete(slow)
    assert subprocess.run([f"{slow}/bin/app"], capture_output=True, text=True, check=True).stdout == "zlib 1.2.13\n"
    # Once the sync has ended, nothing refers to them any more.
    out = run_cli("gc", cfg).stdout
    assert f"removed {slow}" in out and f"removed {zlib}" in out


# --- a directory that is not a store -----------------------------------------------------------

def _ordinary_data(root):
    """What a user keeps in a directory that is not a store: it must survive gc and verify."""
    write(root / "projects" / "my-thesis" / "chapter1.tex", "\\chapter{Introduction}\n")
    write(root / "projects" / "old-2019" / "notes.txt", "notes\n")
    write(root / "zlib" / "1.2.13-ABCDEFGHIJKLMNOPQRST" / "lib" / "x", "upper-case id: not sitedist's\n")


def test_gc_and_verify_refuse_a_directory_that_is_not_a_store(tmp_path):
    data = tmp_path / "data"
    _ordinary_data(data)
    synthetic(tmp_path / "recipes", "alpha")
    cfg = synthetic_config(tmp_path, ["alpha"], tmp_path / "recipes", store=data)
    before = tree_digest(data)
    for args in (["gc", cfg], ["gc", "--dry-run", cfg], ["verify", cfg], ["verify", "--repair", cfg]):
        proc = run_cli(*args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert f"{data} is not a sitedist store (no .sitedist/store.json); nothing was removed" in proc.stderr, args
        assert tree_digest(data) == before, f"{args} changed a directory that is not a store"


def test_only_entries_named_like_artifacts_are_swept(tmp_path):
    data = tmp_path / "data"
    _ordinary_data(data)
    for name in ("alpha", "beta"):
        synthetic(tmp_path / "recipes", name)
    cfg = synthetic_config(tmp_path, ["alpha"], tmp_path / "recipes", store=data)
    run_cli("sync", cfg)   # the directory is now also a store, with alpha in it
    found = {(name, complete) for name, _, _, _, complete in Store(str(data)).artifacts()}
    assert found == {("alpha", True), ("gcc", True)}   # gcc: the host compiler's links
    os.rename(tmp_path / "site.yml", tmp_path / "old.yml")
    synthetic_config(tmp_path, ["beta"], tmp_path / "recipes", store=data)   # alpha is no longer used
    before = tree_digest(data / "projects", data / "zlib")
    out = run_cli("gc", tmp_path / "site.yml").stdout
    assert "removed 2 artifacts" in out and not list(Store(str(data)).artifacts())
    assert tree_digest(data / "projects", data / "zlib") == before
    assert run_cli("verify", tmp_path / "site.yml").returncode == 0


# --- a store shared by an admin group: GC directories --------------------------------------------

@pytest.fixture
def admin_group():
    name = f"sdrev{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(["groupadd", name], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a group here: {proc.stderr.strip()}")
    yield name, grp.getgrnam(name).gr_gid
    subprocess.run(["groupdel", name], check=True)


@pytest.fixture
def public_dir():
    """A directory every user can reach (access(2) checks each parent with the caller's own rights, and
    pytest's temporary directories are private to root)."""
    path = tempfile.mkdtemp(prefix="sitedist-admins-")
    os.chmod(path, 0o755)
    yield Path(path)
    remove_tree(path)


def as_admin(uid, gid, cwd, *args):
    """Run sitedist in ``cwd`` as user ``uid`` in group ``gid`` under umask 077. The process may read and
    search everything (CAP_DAC_READ_SEARCH, to reach this Python and the test's files) but writes only
    where its user and group may."""
    home = cwd / f"home-{uid}"
    home.mkdir(exist_ok=True)
    os.chown(home, uid, -1)
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={gid}", "--inh-caps=+dac_read_search",
           "--ambient-caps=+dac_read_search", sys.executable, "-m", "sitedist.cli.main", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, umask=0o077, env={**os.environ, "HOME": str(home)},
                          cwd=cwd)


def test_admins_of_a_group_store_collect_after_one_another(tmp_path, admin_group, public_dir):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as two admins")
    group, gid = admin_group
    admin_a, admin_b = 1000, 65534
    site = public_dir / "site"
    site.mkdir()
    os.chown(site, -1, gid)
    os.chmod(site, 0o2775)
    recipes = tmp_path / "recipes"
    for name in ("alpha", "beta", "junk1", "junk2"):
        synthetic(recipes, name)

    def cfg(name, package, profile=True):
        extra = f"profiles:\n  {name}: {{packages: [{package}], root: {site / 'profiles' / name}}}\n" if profile else ""
        write(public_dir / f"{name}.yml", f"store: {{root: {site / 'store'}, group: {group}}}\n"
              f"recipes: [{recipes}]\npackages: {{{package}: {{}}}}\n{extra}")
        return public_dir / f"{name}.yml"

    def ok(proc):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        return proc.stdout

    # Admin A publishes a profile and collects a package nothing uses; then admin B does the same.
    ok(as_admin(admin_a, gid, public_dir, "sync", cfg("a", "alpha")))
    ok(as_admin(admin_a, gid, public_dir, "sync", cfg("junk1", "junk1", profile=False)))
    assert "junk1/1.0-" in ok(as_admin(admin_a, gid, public_dir, "gc", public_dir / "a.yml"))
    ok(as_admin(admin_b, gid, public_dir, "sync", cfg("b", "beta")))
    ok(as_admin(admin_b, gid, public_dir, "sync", cfg("junk2", "junk2", profile=False)))
    assert "junk2/1.0-" in ok(as_admin(admin_b, gid, public_dir, "gc", public_dir / "b.yml"))
    ok(as_admin(admin_b, gid, public_dir, "develop", public_dir / "b.yml", "b", site / "env-b"))
    trees = site / "store" / ".sitedist" / "gcroots" / "trees"
    assert len(os.listdir(trees)) == 3   # profiles a and b, develop environment env-b
    for d in (trees, site / "store" / ".sitedist" / "trash"):
        st = os.stat(d)
        assert st.st_gid == gid and stat.S_IMODE(st.st_mode) & 0o2070 == 0o2070, (str(d), oct(st.st_mode))
    assert sorted(a[0] for a in Store(str(site / "store")).artifacts()) == ["alpha", "beta"]


def test_an_unwritable_registry_is_a_clear_error(tmp_path):
    synthetic(tmp_path / "recipes", "alpha")
    cfg = synthetic_config(tmp_path, ["alpha"], tmp_path / "recipes",
                 extra=f"profiles:\n  p: {{packages: [alpha], root: {tmp_path / 'prof' / 'p'}}}\n")
    run_cli("sync", cfg)
    trees = tmp_path / "store" / ".sitedist" / "gcroots" / "trees"
    for name in os.listdir(trees):
        os.unlink(trees / name)
    os.chmod(trees, 0o555)
    try:
        proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all",
                               sys.executable, "-m", "sitedist.cli.main", "sync", cfg], capture_output=True, text=True)
    finally:
        os.chmod(trees, 0o755)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot register the profile tree" in proc.stderr and "chmod g+w" in proc.stderr, proc.stderr


# --- GC reading generations that are pruned meanwhile ---------------------------------------------

def _prune_right_after_listing(monkeypatch, gens, prune):
    """The next listing of ``gens`` is followed at once by ``prune()`` (another process pruning)."""
    real = os.listdir

    def listdir(path="."):
        names = real(path)
        if os.path.abspath(path) == str(gens):
            monkeypatch.setattr(os, "listdir", real)
            prune()
        return names
    monkeypatch.setattr(os, "listdir", listdir)


def test_live_prefixes_skip_a_module_generation_pruned_meanwhile(tmp_path, monkeypatch):
    modules = importlib.import_module("sitedist.modules.publish")
    root = tmp_path / "modules"
    for header in ("one", "two"):
        last = modules.publish([], {"root": str(root), "formats": ["lua"], "header": header})
    gens = root / "generations"
    _prune_right_after_listing(monkeypatch, gens, lambda: modules._prune(str(gens), last.generation, 1))
    assert modules.live_prefixes(str(root)) == set()
    assert sorted(os.listdir(gens)) == [".spare", "2"]   # generation 1's directory, kept for the next publish


def test_live_prefixes_skip_a_profile_generation_pruned_meanwhile(tmp_path, monkeypatch):
    from sitedist import profiles

    root = str(tmp_path / "profiles" / "p")
    for prefix in ("/store/a/1-old", "/store/a/1-new"):
        member = profiles.Member(name="a", label="a 1", prefix=prefix)
        profiles.write_profile(profiles.ProfilePlan(name="p", root=root, members=[member], links={}, dirs=[],
                                                    shadowed=[], inputs=prefix), keep=5)
    _prune_right_after_listing(monkeypatch, profiles.generations_dir(root), lambda: profiles.prune(root, keep=1))
    assert profiles.live_prefixes(root) == {"/store/a/1-new"}
    assert [g.number for g in profiles.list_generations(root)] == [2]


def test_registering_a_sync_root_does_not_import_the_collector(tmp_path):
    code = ("import sys; from sitedist.core.store import Store; from sitedist.core.gcroots import InUse\n"
            "store = Store(sys.argv[1]); store.init()\n"
            "with InUse(store, ['/x']): pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('sitedist'))))")
    loaded = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "sitedist.core.gcroots" in loaded
    assert not {"sitedist.ops.gc", "sitedist.profiles", "sitedist.develop"} & set(loaded), loaded
