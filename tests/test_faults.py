"""Faults of the machine, not of the input: a full disk during a build, a file corrupted inside an
artifact, and a store shared by an admin group whatever the admin's umask."""

import grp
import hashlib
import json
import os
import resource
import stat
import subprocess
import sys
import time
import uuid

import pytest

from conftest import run_cli, tree_digest, write
from storetools import artifact, config, kinds, synthetic, verify


# --- a full disk ---------------------------------------------------------------------------------

LIMIT = 4 << 20   # bytes


@pytest.fixture(params=["tmpfs", "rlimit"])
def small_disk(request, tmp_path):
    """Where a sync runs out of space: (store directory, preexec_fn for the sync, cases).

    tmpfs: the store on a 4 MiB tmpfs (skipped where this process may not mount). rlimit: the sync's
    files limited to 4 MiB (RLIMIT_FSIZE), which works without root. A case is a recipe name, its extra
    build commands, and what the error must say."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if request.param == "rlimit":
        yield disk, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT)), [
            # Writes 8 MB: the command is killed by SIGXFSZ.
            ("big", ['head -c 8000000 /dev/zero > "$PREFIX/share/big/zeros"'], "File size limit exceeded"),
            # Prints 5 MB: sitedist's own write of the build log fails.
            ("loud", ["head -c 5000000 /dev/zero | tr '\\0' x | fold -w 100"], "File too large")]
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LIMIT}", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield disk, None, [
        # Writes 8 MB into its prefix: its own command fails with ENOSPC.
        ("big", ['head -c 8000000 /dev/zero > "$PREFIX/share/big/zeros"'], "No space left on device"),
        # Fills the disk to the last byte and succeeds: sitedist's own writes (spec, log, manifest) fail.
        ("fill", ['avail=$(df --output=avail -B1 "$PREFIX" | tail -1)',
                  'head -c "$avail" /dev/zero > "$PREFIX/share/fill/zeros" || true'], "the filesystem is full")]
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_disk_full_during_a_build(tmp_path, small_disk):
    disk, limit, cases = small_disk
    recipes = tmp_path / "recipes"
    synthetic(recipes, "alpha")
    for name, commands, _ in cases:
        synthetic(recipes, name, commands=commands)
    store = disk / "store"
    modules = tmp_path / "modules"
    good = config(tmp_path, ["alpha"], recipes, store=store, modules=modules, name="good.yml")
    run_cli("sync", good)
    before = tree_digest(artifact(store, "alpha"), modules)

    for name, _, expected in cases:
        cfg = config(tmp_path, ["alpha", name], recipes, store=store, modules=modules, name=f"{name}.yml")
        proc = subprocess.run([sys.executable, "-m", "sitedist.cli.main", "sync", cfg], capture_output=True,
                              text=True, preexec_fn=limit)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"error: {name} 1.0 failed" in proc.stderr and expected in proc.stderr, proc.stderr
        assert "build directory kept" in proc.stderr
        assert not os.listdir(store / name), "the failed build left no prefix"
        assert tree_digest(artifact(store, "alpha"), modules) == before, "artifacts and module tree untouched"
        code, out, _ = verify(cfg)
        assert code == 0 and set(kinds(out["report"])) == {"kept-failed-build"}, out
    # Once space is freed the same store builds again.
    for entry in os.listdir(store / ".sitedist" / "build"):
        subprocess.run(["rm", "-rf", str(store / ".sitedist" / "build" / entry)], check=True)
    synthetic(recipes, "big", commands=['head -c 100000 /dev/zero > "$PREFIX/share/big/zeros"'])
    run_cli("sync", config(tmp_path, ["alpha", "big"], recipes, store=store, modules=modules, name="big.yml"))
    assert verify(good)[0] == 0


# --- a corrupted artifact ------------------------------------------------------------------------

def test_corrupted_file_found_and_repaired(tmp_path):
    """The real zlib and a program linked against it; a byte of libz changes on disk."""
    recipes = tmp_path / "recipes"
    synthetic(recipes, "zcheck", deps=["zlib"], commands=[
        "printf '#include <stdio.h>\\n#include <zlib.h>\\nint main(void){puts(zlibVersion());return 0;}\\n' > z.c",
        '$CC $CPPFLAGS -o "$PREFIX/bin/zcheck" z.c $LDFLAGS -lz'])
    cfg = config(tmp_path, ["zlib", "zcheck"], recipes, modules=tmp_path / "modules")
    run_cli("sync", cfg)
    zlib = artifact(tmp_path / "store", "zlib")
    lib = os.path.realpath(os.path.join(zlib, "lib", "libz.so"))
    rel = os.path.relpath(lib, zlib)
    manifest = json.load(open(os.path.join(zlib, ".sitedist", "manifest.json")))["files"]
    os.chmod(lib, 0o755)
    with open(lib, "r+b") as f:
        f.seek(4000)
        byte = f.read(1)
        f.seek(4000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.chmod(lib, 0o555)

    code, out, err = verify(cfg)
    [broken] = kinds(out["report"])["broken"]
    assert code == 1 and broken["path"] == zlib and "--repair" in err
    size = os.path.getsize(lib)
    assert broken["changes"] == [["changed", rel, f"content differs (size {size}, was {manifest[rel]['size']})"]]
    code, out, _ = verify(cfg, "--repair")
    assert code == 0 and out["after"]["ok"] and [k.split("/")[0] for k in out["repair"]["built"]] == ["zlib"]
    assert hashlib.sha256(open(lib, "rb").read()).hexdigest() == manifest[rel]["sha256"]
    zcheck = os.path.join(artifact(tmp_path / "store", "zcheck"), "bin", "zcheck")
    assert subprocess.run([zcheck], capture_output=True, text=True, check=True).stdout == "1.2.13\n"


# --- a store shared by an admin group --------------------------------------------------------------

@pytest.fixture
def admin_group():
    name = f"sdadm{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(["groupadd", name], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a group here: {proc.stderr.strip()}")
    yield name
    subprocess.run(["groupdel", name], check=True)


def test_group_store_whatever_the_umask(tmp_path, admin_group):
    gid = grp.getgrnam(admin_group).gr_gid
    recipes = tmp_path / "recipes"
    gate = tmp_path / "gate"
    synthetic(recipes, "alpha", commands=[f"touch {gate}.waiting", f"while [ ! -e {gate} ]; do sleep 0.05; done",
                                          'chmod 700 "$PREFIX/bin/alpha"; chmod 600 "$PREFIX/share/alpha/data.txt"'])
    store = tmp_path / "store"
    cfg = write(tmp_path / "site.yml", f"""
        store: {{root: {store}, group: {admin_group}}}
        recipes: [{recipes}]
        packages: {{alpha: {{}}}}
        """)

    sync = subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", cfg], umask=0o077,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not os.path.exists(f"{gate}.waiting"):
            assert sync.poll() is None, sync.stdout.read()
            time.sleep(0.01)
        # While it builds, the other admins can read who holds its lock (and take it over if it dies).
        locks = store / ".sitedist" / "locks"
        for name in os.listdir(locks):
            st = os.stat(locks / name)
            assert st.st_gid == gid and stat.S_IMODE(st.st_mode) & 0o040, (name, oct(st.st_mode))
        assert any(n.endswith(".lock.info") for n in os.listdir(locks))
    finally:
        gate.touch()
        out = sync.communicate(timeout=120)[0]
    assert sync.returncode == 0, out

    shared = [store, store / ".sitedist"] + [store / ".sitedist" / d for d in ("src", "build", "locks", "gcroots",
                                                                              "reports", "tmp")] + [store / "alpha"]
    for d in shared:
        st = os.stat(d)
        mode = stat.S_IMODE(st.st_mode)
        assert st.st_gid == gid and mode & stat.S_ISGID and mode & 0o070 == 0o070 and mode & 0o005 == 0o005, \
            (str(d), oct(mode))
    for name in ["store.json"] + os.listdir(store / ".sitedist" / "reports"):
        path = store / ".sitedist" / name if name == "store.json" else store / ".sitedist" / "reports" / name
        st = os.stat(path)
        assert st.st_gid == gid and stat.S_IMODE(st.st_mode) & 0o060 == 0o060, (str(path), oct(st.st_mode))
    prefix = artifact(store, "alpha")
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in [""] + dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            assert st.st_gid == gid, path
            if stat.S_ISLNK(st.st_mode):
                continue   # a symlink's own mode means nothing
            assert not mode & 0o222, f"{path} is writable: {oct(mode)}"
            assert mode & 0o444 == 0o444, f"{path} is not readable by all: {oct(mode)}"
            if stat.S_ISDIR(st.st_mode):
                assert mode & stat.S_ISGID and mode & 0o111 == 0o111, path
    assert os.stat(os.path.join(prefix, "bin", "alpha")).st_mode & 0o111 == 0o111
    assert verify(cfg)[0] == 0


# --- a sync stopped by a signal ----------------------------------------------------------------------

def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"   # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_signalled_sync_stops_its_builds(tmp_path, signum):
    """`kill` (or a closed terminal) on a sync whose build prints nothing: the build's processes end with
    it, its prefix is not left behind, and the next sync builds it."""
    import signal

    recipes = tmp_path / "recipes"
    pidfile = tmp_path / "build.pid"
    synthetic(recipes, "quiet", commands=[f'echo $$ > {pidfile}', "sleep 300"])
    cfg = config(tmp_path, {"quiet": None}, recipes)
    proc = subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", cfg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    build_pid = int(pidfile.read_text())
    assert _alive(build_pid)
    proc.send_signal(getattr(signal, signum))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err, err
    deadline = time.time() + 10
    while _alive(build_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(build_pid), f"the build (pid {build_pid}) outlived the sync"
    store = tmp_path / "store" / "quiet"
    assert not store.exists() or os.listdir(store) == [], os.listdir(store)
    # Nothing stale blocks the next sync (the build itself is made quick).
    synthetic(recipes, "quiet")
    run_cli("sync", cfg)
    assert any((store / e / "bin" / "quiet").exists() for e in os.listdir(store))
