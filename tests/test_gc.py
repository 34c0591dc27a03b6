"""Garbage collection with real builds: what no root refers to goes (bytes reported as du measures
them), what a root refers to stays with its dependencies, retention prunes profile generations first,
another config's module tree keeps its artifacts, and a GC during a sync leaves that sync's artifacts."""

import json
import os
import re
import subprocess
import sys
import time

from conftest import run_cli, site_config, tree_digest, write

from sitedist.core.locks import StoreLock
from sitedist.core.store import Store

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
    app, zlib, junk, gcc = (prefix(store, n) for n in ("app", "zlib", "junk", "gcc"))
    expected = du(junk, gcc)
    before = tree_digest(store)

    dry = run_cli("gc", cfg, "--dry-run", "-v").stdout
    assert f"root: profile {tmp_path}/prof/p (1 prefixes)" in dry
    assert f"would remove {junk} (2.9 MiB)" in dry and f"would remove {gcc}" in dry
    assert app not in dry and zlib not in dry
    assert freed(dry) == expected and "dry run: nothing was removed" in dry
    assert tree_digest(store) == before, "a dry run changes nothing"

    # A root a user registers keeps junk until it is removed again.
    sizes = {junk: du(junk), gcc: du(gcc)}
    assert "root paper: 1 artifacts kept" in run_cli("gc", cfg, "--add-root", "paper", junk).stdout
    out = run_cli("gc", cfg).stdout
    assert f"removed {gcc}" in out and f"{store}: removed 1 artifacts" in out and freed(out) == sizes[gcc], out
    assert os.path.exists(junk)
    run_cli("gc", cfg, "--remove-root", "paper")
    out = run_cli("gc", cfg).stdout
    assert f"removed {junk} (2.9 MiB)" in out and f"{store}: removed 1 artifacts" in out, out
    assert freed(out) == sizes[junk] and sum(sizes.values()) == expected
    assert not os.path.exists(junk) and not os.path.exists(gcc)
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
