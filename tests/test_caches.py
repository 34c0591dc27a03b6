"""Caches another user could write are never read (issue 11 item 5).

A real second user plants a probe result and a documents cache (a pickle) in their own cache
directory; root, running with that user's environment (``sudo -E``, ``su`` without ``-``: the user's
``$XDG_CACHE_HOME``), must use neither, must not write there, and says so. The same files in root's own
private cache directory are used (the control that shows the planted files would work)."""

import json
import logging
import os
import pickle
import pwd
import subprocess
import types
import uuid

import pytest

from conftest import run_cli, write
from sitedist.core import durable, trust
from storetools import synthetic

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making a second user needs root")


@pytest.fixture(scope="module")
def other():
    """A real unprivileged user: (name, uid, home)."""
    name = f"sdc{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_dir
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)


def as_user(user, *argv, data=None):
    """Run ``argv`` as the user (runuser), feeding ``data`` (bytes) on stdin."""
    return subprocess.run(["runuser", "-u", user[0], "--", *argv], input=data, capture_output=True, check=True)


def plant(user, path, data, mode="644"):
    as_user(user, "mkdir", "-p", os.path.dirname(path))
    as_user(user, "sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "sh", path, mode, data=data)


# --- the rule itself --------------------------------------------------------------------------------

def test_untrusted_reason(tmp_path, other):
    name, uid, home = other
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert trust.untrusted_reason(str(mine)) is None
    assert trust.untrusted_reason(str(mine / "not" / "yet")) is None, "a missing path is judged by its parents"
    assert "owned by uid" in trust.untrusted_reason(home)
    assert "owned by uid" in trust.untrusted_reason(os.path.join(home, ".cache", "sitedist"))
    theirs = mine / "theirs"
    theirs.mkdir()
    os.chown(theirs, uid, -1)
    assert f"owned by uid {uid}" in trust.untrusted_reason(str(theirs / "probe.json"))
    shared = mine / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert "writable by others" in trust.untrusted_reason(str(shared / "x"))
    group = mine / "group"
    group.mkdir()
    os.chmod(group, 0o770)
    assert "writable by its group" in trust.untrusted_reason(str(group))
    sticky = mine / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "ours").mkdir(mode=0o700)
    assert trust.untrusted_reason(str(sticky / "ours")) is None, "a sticky directory like /tmp is fine above ours"
    os.symlink(home, mine / "link")
    assert "owned by uid" in trust.untrusted_reason(str(mine / "link" / "x")), "a link is judged by its target"


def test_open_private_refuses_what_others_can_write(tmp_path, other):
    good = tmp_path / "good"
    good.write_text("ok")
    os.chmod(good, 0o600)
    with trust.open_private(str(good)) as f:
        assert f.read() == "ok"
    for setup in (lambda p: os.chown(p, other[1], -1), lambda p: os.chmod(p, 0o666)):
        bad = tmp_path / f"bad{uuid.uuid4().hex[:6]}"
        bad.write_text("planted")
        setup(bad)
        with pytest.raises(OSError):
            trust.open_private(str(bad))
    os.symlink(good, tmp_path / "link")
    with pytest.raises(OSError):
        trust.open_private(str(tmp_path / "link"))


def test_write_private_does_not_follow_a_planted_link(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "cache.json"
    monkeypatch.setattr(durable, "time", types.SimpleNamespace(monotonic_ns=iter([7, 8]).__next__))
    os.symlink(victim, f"{target}.tmp-{os.getpid()}-7")   # at the first temporary name it takes
    old = os.umask(0)   # private whatever the umask
    try:
        trust.write_private(str(target), b"new")
    finally:
        os.umask(old)
    assert victim.read_text() == "precious" and os.readlink(f"{target}.tmp-{os.getpid()}-7") == str(victim)
    assert target.read_bytes() == b"new" and (os.stat(target).st_mode & 0o777) == 0o600


# --- the documents cache (a pickle: loading it runs code) ---------------------------------------------

class Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_root_does_not_load_a_users_documents_cache(tmp_path, other, caplog):
    from sitedist.spec.doc_cache import DocCache

    config = write(tmp_path / "site.yml", "packages: {}\n")
    marker = tmp_path / "pwned"
    user_cache = os.path.join(other[2], ".cache", "sitedist")
    planted = DocCache.for_config(config, str(tmp_path / "probe-name")).path  # the file name root would use
    data = pickle.dumps({"x": Planted(str(marker))})
    plant(other, os.path.join(user_cache, os.path.basename(planted)), data)
    before = sorted(os.listdir(user_cache))
    with caplog.at_level(logging.WARNING):
        cache = DocCache.for_config(config, user_cache)
        cache.entries   # the entries are read when first used
    assert not marker.exists(), "root loaded a pickle another user wrote"
    assert cache.path is None and "not using the documents cache" in caplog.text and "owned by uid" in caplog.text
    cache.entries["y"] = 1
    cache.dirty = True
    cache.save()
    assert sorted(os.listdir(user_cache)) == before, "root wrote into another user's cache directory"
    # Control: the same file in root's own private cache directory is loaded.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (mine / os.path.basename(planted)).write_bytes(data)
    os.chmod(mine / os.path.basename(planted), 0o600)
    DocCache.for_config(config, str(mine)).entries
    assert marker.exists(), "the control failed: a trusted cache was not read"


# --- the probe cache, through a real sync ------------------------------------------------------------

@pytest.mark.slow
def test_root_does_not_use_a_probe_result_planted_by_a_user(tmp_path, other):
    """The planted result names the user's 'gcc' (a script that leaves a mark when root runs it)."""
    recipes = tmp_path / "recipes"
    synthetic(recipes, "usecc", commands=['"$CC" --version > "$PREFIX/cc-version"'])
    marker = tmp_path / "ran-the-users-gcc"

    def sync(cache_home, store):
        cfg = write(tmp_path / f"{store}.yml", f"""
            store: {tmp_path / store}
            recipes: [{recipes}]
            packages: {{usecc: {{}}}}
            """)
        env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
        return run_cli("sync", cfg, env=env)

    genuine_home = tmp_path / "genuine"
    genuine_home.mkdir(mode=0o700)
    sync(genuine_home, "store0")
    [probe_file] = [f for f in os.listdir(genuine_home / "sitedist") if f.startswith("probe-")]
    report = json.loads((genuine_home / "sitedist" / probe_file).read_text())
    evil_gcc = os.path.join(other[2], "gcc")
    plant(other, evil_gcc, f"#!/bin/sh\nmkdir -p {marker}\nexec /usr/bin/gcc \"$@\"\n".encode(), mode="755")
    for c in report["compilers"]:
        if c["name"] == "gcc":
            c["cc"] = evil_gcc
    planted = json.dumps(report).encode()

    user_cache = os.path.join(other[2], ".cache")
    plant(other, os.path.join(user_cache, "sitedist", probe_file), planted)
    proc = sync(user_cache, "store1")
    assert not marker.exists(), "root ran the compiler named by another user's probe cache"
    assert "warning: not using the probe cache in" in proc.stderr and "owned by uid" in proc.stderr
    links = [os.readlink(os.path.join(dp, f)) for dp, _, fs in os.walk(tmp_path / "store1" / "gcc") for f in fs
             if f == "gcc"]
    assert links and evil_gcc not in links
    owners = {os.lstat(os.path.join(dp, f)).st_uid for dp, _, fs in os.walk(user_cache) for f in fs}
    assert owners == {other[1]}, "root wrote into the user's cache directory"

    # Control: the same result in root's own cache directory is used.
    (genuine_home / "sitedist" / probe_file).write_bytes(planted)
    sync(genuine_home, "store2")
    assert marker.exists(), "the control failed: a trusted probe cache was not used"


def test_an_upstream_source_copy_is_checked_again(tmp_path):
    import hashlib

    from sitedist.core.sources import Fetcher

    data = b"the real source\n"
    sha = hashlib.sha256(data).hexdigest()
    source = {"url": "file:///nonexistent/pkg-1.0.tar.gz", "sha256": sha}
    upstream = tmp_path / "upstream"
    (upstream / sha).mkdir(parents=True)
    (upstream / sha / "pkg-1.0.tar.gz").write_bytes(b"replaced by someone who can write there\n")
    fetcher = Fetcher(str(tmp_path / "own"), upstream_caches=[str(upstream)])
    assert fetcher.cached(source) is None
    (upstream / sha / "pkg-1.0.tar.gz").write_bytes(data)
    assert fetcher.cached(source) == str(upstream / sha / "pkg-1.0.tar.gz")


@pytest.mark.slow
def test_root_does_not_build_into_a_users_home(tmp_path, other):
    """A config without 'store:' builds under ~/.sitedist; root with a user's HOME (sudo -E) refuses."""
    cfg = write(tmp_path / "site.yml", "packages: {}\n")
    before = sorted(os.listdir(other[2]))
    proc = run_cli("sync", "--dry-run", cfg, check=False, env={**os.environ, "HOME": other[2],
                                                               "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"no 'store:' is set, and the default {other[2]}/.sitedist is not safe to use" in proc.stderr
    assert "owned by uid" in proc.stderr and "hint: set 'store:'" in proc.stderr
    assert sorted(os.listdir(other[2])) == before


@pytest.mark.slow
def test_root_is_told_when_a_recipe_is_writable_by_another_user(tmp_path, other):
    """Recipes are code that runs as root: one in a directory another user owns gets a warning."""
    theirs = tmp_path / "theirs"
    synthetic(theirs, "alpha")
    subprocess.run(["chown", "-R", f"{other[0]}:", str(theirs)], check=True)
    cfg = write(tmp_path / "site.yml", f"store: {tmp_path / 'store'}\nrecipes: [{theirs}]\npackages: {{alpha: {{}}}}\n")
    proc = run_cli("sync", "--dry-run", cfg, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert f"warning: recipe {theirs}/alpha.yml: {theirs} is owned by uid {other[1]}" in proc.stderr
    assert proc.stderr.count("whoever can write it decides what runs as root") == 1, proc.stderr
    subprocess.run(["chown", "-R", "root:", str(theirs)], check=True)
    assert "whoever can write it" not in run_cli("sync", "--dry-run", cfg).stderr


def test_the_directory_memo_still_checks_each_file(tmp_path):
    """untrusted_reason's memo skips directories already found safe, never the file itself."""
    from sitedist.core.trust import untrusted_reason

    d = tmp_path / "recipes"
    d.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    good, bad = d / "good.yml", d / "bad.yml"
    good.write_text("x")
    bad.write_text("x")
    os.chmod(good, 0o644)
    os.chmod(bad, 0o664)
    passed = set()
    assert untrusted_reason(str(good), passed) is None
    assert str(d) in passed
    assert untrusted_reason(str(bad), passed) == f"{bad} is writable by its group"
