"""`sitedist verify`: every kind of difference from a manifest, incomplete prefixes, leftovers of killed
processes, and `--repair`, on real (cheap) builds of synthetic recipes."""

import json
import os
import stat
import subprocess
import sys
import time

from sitedist.core.store import remove_tree

from conftest import run_cli
from storetools import artifact, config, kinds, synthetic, verify


def _writable(path):
    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IWUSR)


def built(tmp_path, names=("alpha", "beta"), **kw):
    recipes = tmp_path / "recipes"
    for name in names:
        synthetic(recipes, name, **kw)
    cfg = config(tmp_path, names, recipes)
    run_cli("sync", cfg)
    return cfg, tmp_path / "store"


def test_clean_store_and_missing_store(tmp_path):
    cfg, store = built(tmp_path)
    code, out, _ = verify(cfg)
    assert code == 0 and out["report"]["ok"] and out["report"]["errors"] == []
    assert out["report"]["artifacts"] == 3  # alpha, beta and the host compiler's links
    text = run_cli("verify", cfg).stdout
    assert "3 complete artifacts checked; all match their manifests" in text
    other = config(tmp_path, ["alpha"], tmp_path / "recipes", store=tmp_path / "nothing", name="other.yml")
    code, out, _ = verify(other)
    assert code == 0 and out["report"]["artifacts"] == 0
    assert not (tmp_path / "nothing").exists(), "verify writes nothing"


def test_every_kind_of_difference_is_reported(tmp_path):
    cfg, store = built(tmp_path)
    a, b = artifact(store, "alpha"), artifact(store, "beta")
    for d in (f"{a}/bin", f"{a}/share/alpha", f"{a}/lib", f"{b}/share/beta", f"{b}/bin"):
        _writable(d)
    _writable(f"{a}/share/alpha/data.txt")
    with open(f"{a}/share/alpha/data.txt", "a") as f:
        f.write("tampered\n")                                   # changed (and writable again)
    open(f"{a}/bin/intruder", "w").close()                      # added
    os.unlink(f"{a}/lib/libalpha.txt")                          # removed
    os.chmod(f"{b}/bin/beta", 0o444)                            # no longer executable
    os.unlink(f"{b}/share/beta/link")
    os.symlink("/etc/passwd", f"{b}/share/beta/link")           # link retargeted
    os.unlink(f"{b}/share/beta/data.txt")
    os.symlink("link", f"{b}/share/beta/data.txt")              # a file became a link
    before = {p: os.lstat(p).st_mtime_ns for p in (a, b)}

    code, out, err = verify(cfg)
    assert code == 1 and "2 problem(s)" in err and "--repair" in err
    broken = {f["artifact"].split("/")[0]: {(c[0], c[1]) for c in f["changes"]} for f in kinds(out["report"])["broken"]}
    assert broken["alpha"] == {("changed", "share/alpha/data.txt"), ("mode", "share/alpha/data.txt"),
                               ("added", "bin/intruder"), ("removed", "lib/libalpha.txt")}
    assert broken["beta"] == {("mode", "bin/beta"), ("link", "share/beta/link"), ("type", "share/beta/data.txt")}
    assert {p: os.lstat(p).st_mtime_ns for p in (a, b)} == before, "verify changes nothing"
    text = run_cli("verify", cfg, check=False).stdout
    assert "share/beta/link: points to /etc/passwd, was data.txt" in text
    assert "bin/beta: no longer executable" in text and a in text


def test_unreadable_metadata_and_wrong_marker(tmp_path):
    cfg, store = built(tmp_path)
    a, b = artifact(store, "alpha"), artifact(store, "beta")
    _writable(f"{a}/.sitedist")
    os.unlink(f"{a}/.sitedist/manifest.json")
    _writable(f"{b}/.sitedist")
    os.chmod(f"{b}/.sitedist/complete", 0o644)
    with open(f"{b}/.sitedist/complete", "w") as f:
        json.dump({"id": "someoneelse"}, f)
    code, out, _ = verify(cfg)
    changes = {f["artifact"].split("/")[0]: f["changes"] for f in kinds(out["report"])["broken"]}
    assert code == 1 and changes["alpha"][0][0] == "meta" and "manifest.json" in changes["alpha"][0][2]
    assert changes["beta"] == [["meta", ".sitedist/complete", f"the marker is for id someoneelse, the directory "
                                                              f"for {os.path.basename(b).rsplit('-', 1)[1]}"]]


def test_repair_rebuilds_broken_artifacts_of_the_plan_only(tmp_path):
    cfg, store = built(tmp_path)
    recipes = tmp_path / "recipes"
    synthetic(recipes, "gamma")
    other = config(tmp_path, ["gamma"], recipes, name="other.yml")
    run_cli("sync", other)
    for name in ("alpha", "gamma"):
        p = artifact(store, name)
        _writable(f"{p}/lib")
        os.unlink(f"{p}/lib/lib{name}.txt")
    manifest = json.load(open(f"{artifact(store, 'alpha')}/.sitedist/manifest.json"))

    code, out, err = verify(cfg, "--repair")
    assert code == 1, "gamma is still broken"
    rep = out["repair"]
    assert [k.split("/")[0] for k in rep["built"]] == ["alpha"]
    assert any("gamma" in line and "not in" in line and "plan" in line for line in rep["left"]), rep["left"]
    assert [f["artifact"].split("/")[0] for f in out["after"]["errors"]] == ["gamma"]
    prefix = artifact(store, "alpha")
    assert open(f"{prefix}/lib/libalpha.txt").read() == "alpha\n"
    assert json.load(open(f"{prefix}/.sitedist/manifest.json"))["files"] == manifest["files"]
    assert not os.listdir(store / ".sitedist" / "trash"), "the broken copy is gone once rebuilt"
    code, out, _ = verify(other, "--repair")
    assert code == 0 and out["after"]["ok"]


def test_incomplete_prefix_dead_or_being_built(tmp_path):
    cfg, store = built(tmp_path, names=("alpha",))
    dry = json.loads(run_cli("sync", "--dry-run", "--json", cfg).stdout)
    node = [a for a in dry["artifacts"] if a["name"] == "alpha"][0]
    prefix = node["prefix"]
    _writable(f"{prefix}/.sitedist")
    os.chmod(f"{prefix}/.sitedist/complete", 0o644)
    os.rename(f"{prefix}/.sitedist/complete", f"{prefix}/.sitedist/gone")   # as if killed before the marker
    code, out, _ = verify(cfg)
    assert code == 1 and [f["path"] for f in kinds(out["report"])["incomplete"]] == [prefix]

    lock = store / ".sitedist" / "locks" / f"alpha-{node['version']}-{node['id']}.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from sitedist.core.locks import StoreLock; l = StoreLock(sys.argv[1], 'building alpha')"
        ".acquire(); print('held', flush=True); sys.stdin.read()"), str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, out, _ = verify(cfg, "--repair")
        found = kinds(out["report"])
        assert code == 0 and "incomplete" not in found
        assert f"pid {holder.pid}" in found["building"][0]["message"]
        assert os.path.isdir(prefix), "a build in progress is left alone"
    finally:
        holder.stdin.close()
        holder.wait()
    code, out, _ = verify(cfg, "--repair")   # its holder is gone: an interrupted build
    assert code == 0 and any(line.startswith(f"removed incomplete prefix {prefix}") for line in out["repair"]["done"])
    assert kinds(out["report"])["incomplete"] and not os.path.exists(prefix) and out["after"]["ok"]


def test_build_directories_interrupted_and_kept(tmp_path):
    recipes = tmp_path / "recipes"
    synthetic(recipes, "alpha")
    synthetic(recipes, "broken", commands=["echo this build fails", "false"])
    cfg = config(tmp_path, ["alpha", "broken"], recipes)
    proc = run_cli("sync", cfg, check=False)
    assert proc.returncode != 0 and "broken 1.0 failed" in proc.stderr
    code, out, _ = verify(cfg)
    kept = kinds(out["report"])["kept-failed-build"]
    assert code == 0 and len(kept) == 1 and "broken-1.0-" in kept[0]["path"], "a kept failed build is a note"

    # An interrupted build: its prefix and build directory, no marker, its lock holder dead.
    prefix = artifact(tmp_path / "store", "alpha")
    build = tmp_path / "store" / ".sitedist" / "build" / ("alpha-" + os.path.basename(prefix))
    os.makedirs(build / "src")
    _writable(f"{prefix}/.sitedist")
    os.unlink(f"{prefix}/.sitedist/complete")
    code, out, _ = verify(cfg, "--repair")
    found = kinds(out["report"])
    assert code == 0 and [f["path"] for f in found["interrupted-build"]] == [str(build)]
    assert not build.exists() and not os.path.exists(prefix)
    assert os.path.isdir(kept[0]["path"]), "--repair leaves failed builds' directories for the admin"


def test_corrupt_cached_source_and_leftovers(tmp_path):
    recipes = tmp_path / "recipes"
    cfg = config(tmp_path, ["zlib"], recipes)
    os.makedirs(recipes, exist_ok=True)
    store = tmp_path / "store"
    run_cli("sync", cfg)
    [sha] = [d for d in os.listdir(store / ".sitedist" / "src") if len(d) == 64]
    [cached] = os.listdir(store / ".sitedist" / "src" / sha)
    path = store / ".sitedist" / "src" / sha / cached
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\0corrupt\0")
    old, young = path.parent / f"{cached}.part-4242-1", path.parent / f"{cached}.part-4243-1"
    for p in (old, young, store / ".sitedist" / "store.json.tmp-4242-7"):
        p.write_text("partial")
    for p in (old, store / ".sitedist" / "store.json.tmp-4242-7"):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    dead_root = store / ".sitedist" / "gcroots" / "inuse-somehost-4242-1.json"
    dead_root.write_text(json.dumps({"prefixes": [], "pid": 2 ** 22 + 7, "host": os.uname().nodename,
                                     "started": time.time(), "created": 0, "what": "sync"}))

    trash = store / ".sitedist" / "trash"
    dead_gc, running_gc = trash / f"gc-{2 ** 22 + 7}-ab12", trash / f"gc-{os.getpid()}-cd34"
    for d in (dead_gc, running_gc):
        os.makedirs(d / "zlib-1.0-x")
    code, out, _ = verify(cfg)
    found = kinds(out["report"])
    assert [f["path"] for f in found["trash"]] == [str(dead_gc)], "a running GC's trash is not a leftover"
    assert code == 1 and [f["path"] for f in found["bad-source"]] == [str(path)]
    tmp_file = store / ".sitedist" / "store.json.tmp-4242-7"
    assert sorted(f["path"] for f in found["leftover"]) == sorted([str(old), str(tmp_file)])
    assert [f["path"] for f in found["dead-root"]] == [str(dead_root)]
    code, out, _ = verify(cfg, "--repair")
    assert code == 0 and out["after"]["ok"] and [f["kind"] for f in out["after"]["notes"]] == []
    assert not path.exists() and not old.exists() and young.exists() and not dead_root.exists()
    assert not dead_gc.exists() and running_gc.exists()
    remove_tree(running_gc)
    # The next build fetches the source again from the mirror.
    prefix = artifact(store, "zlib")
    remove_tree(prefix)
    run_cli("sync", cfg)
    assert path.exists() and os.path.isfile(f"{prefix}/include/zlib.h")


def test_stale_lock_of_a_dead_holder(tmp_path):
    cfg, store = built(tmp_path, names=("alpha",))
    lock = store / ".sitedist" / "locks" / "gc.lock"
    subprocess.run([sys.executable, "-c", "import sys, os; from sitedist.core.locks import StoreLock; "
                    "StoreLock(sys.argv[1], 'gc').acquire(); os._exit(0)", str(lock)], check=True)
    code, out, _ = verify(cfg)
    [stale] = kinds(out["report"])["stale-lock"]
    assert code == 0 and stale["path"] == str(lock) and "(gc)" in stale["message"]
    code, out, _ = verify(cfg, "--repair")
    assert code == 0 and not lock.exists() and not os.path.exists(f"{lock}.info")


def test_upstream_stores_are_not_checked(tmp_path):
    cfg, store = built(tmp_path, names=("alpha",))
    p = artifact(store, "alpha")
    _writable(f"{p}/lib")
    os.unlink(f"{p}/lib/libalpha.txt")
    user = config(tmp_path, ["alpha"], tmp_path / "recipes", store=tmp_path / "mine", name="user.yml",
                  extra=f"upstreams: [{store}]\n")
    run_cli("sync", user)
    code, out, _ = verify(user)
    assert code == 0 and out["report"]["store"] == str(tmp_path / "mine")
    assert verify(cfg)[0] == 1
