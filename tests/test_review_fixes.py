"""Fixes from a code review: gc and verify only ever sweep a sitedist store, and only what is named like
an artifact; git sources fetched concurrently; a develop environment's activate script with a hostile
directory name; group-writable GC directories; process liveness under /proc hidepid=2; GC racing a prune."""

import grp
import importlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_cli, tree_digest, write
from storetools import config, synthetic

from sitedist.core.sources import Fetcher
from sitedist.core.store import Store, remove_tree
from sitedist.errors import SourceError


def _ordinary_data(root):
    """What a user keeps in a directory that is not a store: it must survive gc and verify."""
    write(root / "projects" / "my-thesis" / "chapter1.tex", "\\chapter{Introduction}\n")
    write(root / "projects" / "old-2019" / "notes.txt", "notes\n")
    write(root / "zlib" / "1.2.13-ABCDEFGHIJKLMNOPQRST" / "lib" / "x", "upper-case id: not sitedist's\n")


def test_gc_and_verify_refuse_a_directory_that_is_not_a_store(tmp_path):
    data = tmp_path / "data"
    _ordinary_data(data)
    synthetic(tmp_path / "recipes", "alpha")
    cfg = config(tmp_path, ["alpha"], tmp_path / "recipes", store=data)
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
    cfg = config(tmp_path, ["alpha"], tmp_path / "recipes", store=data)
    run_cli("sync", cfg)   # the directory is now also a store, with alpha in it
    found = {(name, complete) for name, _, _, _, complete in Store(str(data)).artifacts()}
    assert found == {("alpha", True), ("gcc", True)}   # gcc: the host compiler's links
    os.rename(tmp_path / "site.yml", tmp_path / "old.yml")
    config(tmp_path, ["beta"], tmp_path / "recipes", store=data)   # alpha is no longer used
    before = tree_digest(data / "projects", data / "zlib")
    out = run_cli("gc", tmp_path / "site.yml").stdout
    assert "removed 2 artifacts" in out and not list(Store(str(data)).artifacts())
    assert tree_digest(data / "projects", data / "zlib") == before
    assert run_cli("verify", tmp_path / "site.yml").returncode == 0


# --- git sources fetched concurrently -------------------------------------------------------------

def _git_repo(path, *contents):
    """A git repository with one commit per text of file.txt; the commit ids, oldest first."""
    path.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", *a],
                                    check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    commits = []
    for text in contents:
        (path / "file.txt").write_text(text)
        git("add", ".")
        git("commit", "-qm", text)
        commits.append(git("rev-parse", "HEAD").strip())
    return commits


_FETCH = ("import sys; from sitedist.core.sources import Fetcher; Fetcher(sys.argv[1], lock_dir=sys.argv[2])"
          ".fetch_git({'git': sys.argv[3], 'commit': sys.argv[4]}, sys.argv[5])")


def test_concurrent_fetches_of_one_git_source(tmp_path):
    repo = tmp_path / "repo"
    first, second = _git_repo(repo, "one\n", "two\n")
    for round_, commit in enumerate([first, second, first]):
        cache, locks = tmp_path / f"cache{round_}", tmp_path / f"locks{round_}"
        source = {"git": str(repo), "commit": commit}
        dests = [tmp_path / f"r{round_}" / f"t{i}" / "src" for i in range(6)]
        procs = [subprocess.Popen([sys.executable, "-c", _FETCH, str(cache), str(locks), str(repo), commit,
                                   str(tmp_path / f"r{round_}" / f"p{i}" / "src")], stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        errors = []

        def fetch(dest):
            try:
                Fetcher(str(cache), lock_dir=str(locks)).fetch_git(source, str(dest))
            except Exception as exc:   # noqa: BLE001 - collected and reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=fetch, args=(d,)) for d in dests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            assert p.wait() == 0, p.stderr.read()
        assert errors == []
        want = "one\n" if commit == first else "two\n"
        for dest in dests + [tmp_path / f"r{round_}" / f"p{i}" / "src" for i in range(2)]:
            assert (dest / "file.txt").read_text() == want
        assert len(os.listdir(cache)) == 1 and os.listdir(cache)[0].startswith("git-"), os.listdir(cache)
        assert os.listdir(locks) == [], "the mirror's lock is released"


def test_git_errors_are_plain_text(tmp_path):
    with pytest.raises(SourceError) as err:
        Fetcher(str(tmp_path / "cache")).fetch_git({"git": str(tmp_path / "no-such-repo"), "commit": "f" * 40},
                                                   str(tmp_path / "src"))
    message = str(err.value)
    assert message.startswith(f"git clone --quiet failed for {tmp_path / 'no-such-repo'}: ")
    assert "['" not in message and "does not exist" in message


# --- develop: a hostile directory name ------------------------------------------------------------

def test_activate_script_with_shell_syntax_and_a_newline_in_the_directory_name(tmp_path):
    synthetic(tmp_path / "recipes", "alpha")
    cfg = config(tmp_path, ["alpha"], tmp_path / "recipes",
                 extra=f"profiles:\n  p: {{packages: [alpha], root: {tmp_path / 'prof' / 'p'}}}\n")
    run_cli("sync", cfg)
    work = tmp_path / "work"
    work.mkdir()
    name = "dev$(touch PWN1)`touch PWN2`\ntouch PWN3; #'\"x"
    env = work / name
    run_cli("develop", cfg, "p", env)
    text = (env / "activate").read_text()
    lines = text.splitlines()
    assert all(line.startswith("# ") for line in lines[:3]) and lines[3] == "", "the comments stay single lines"
    assert "touch PWN3" in lines[0]
    script = 'PS1="$ "; source "$1/activate"; printf "%s|%s|%s\\n" "$SITEDIST_ENV" "${PATH%%:*}" "${PS1@P}"; ' \
             'deactivate; printf "%s|%s" "${SITEDIST_ENV-unset}" "$PS1"'
    proc = subprocess.run(["bash", "-c", script, "bash", str(env)], cwd=work, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == f"{env}|{env}/bin|({name}) $ \nunset|$ "
    assert sorted(os.listdir(work)) == [name], "nothing in the name was run, on activation or in the prompt"


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
    cfg = config(tmp_path, ["alpha"], tmp_path / "recipes",
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


# --- process liveness where /proc hides other users' processes -----------------------------------

HIDDEN_CHECKS = r"""
import json, os, socket, sys, time
from sitedist.core import locks
from sitedist.core.gcroots import live_roots
from sitedist.core.generations import point, remove_leftovers
from sitedist.core.processes import pid_alive
from sitedist.core.store import Store
from sitedist.verify import _leftover_findings

pid, start, dead, work = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = Store(os.path.join(work, "store"))
info = {"taking": False, "host": socket.gethostname(), "machine": locks._machine(), "pid": pid, "start": start,
        "heartbeat": time.time() - 3600}
point(os.path.join(work, "current"), "generations/1")
print(json.dumps({
    "visible": os.path.exists(f"/proc/{pid}"),
    "alive": [pid_alive(pid), pid_alive(pid, start), pid_alive(dead)],
    "lock stale": locks.is_stale(info, 600),
    "roots": sorted(live_roots(store)),
    "switch tmp kept": os.path.lexists(os.path.join(work, f"current.tmp-{pid}")),
    "staging kept": (remove_leftovers(os.path.join(work, "generations")),
                     os.path.isdir(os.path.join(work, "generations", f".staging-2-{pid}")))[1],
    "trash findings": [f.path for f in _leftover_findings(store, {}, time.time()) if f.kind == "trash"],
}))
"""


def test_another_users_process_hidden_by_proc_hidepid_counts_as_alive(tmp_path):
    """Another admin's live sync, invisible in a /proc mounted hidepid=2: its lock is not stale, its GC
    root counts, its temporary switch link, staging directory and trash entry are left alone."""
    import psutil

    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
    try:
        start = psutil.Process(other.pid).create_time()
        dead = subprocess.Popen(["true"])
        dead.wait()
        store = Store(str(tmp_path / "store"))
        store.init()
        store.write_json_atomic(os.path.join(store.gcroots_dir, "inuse-other.json"),
                                {"prefixes": [], "pid": other.pid, "host": socket.gethostname(), "created": start,
                                 "started": time.time(), "what": "sync"})
        os.makedirs(os.path.join(store.trash_dir, f"gc-{other.pid}-abcd1234"))
        os.makedirs(tmp_path / "generations" / "1")
        os.makedirs(tmp_path / "generations" / f".staging-2-{other.pid}")
        os.symlink("generations/1", tmp_path / f"current.tmp-{other.pid}")
        # As root outside group 0 without CAP_SYS_PTRACE and CAP_KILL: like another admin, for hidepid.
        checks = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t proc -o hidepid=2 proc /proc && exec setpriv --regid=65534 --clear-groups '
             '--bounding-set=-sys_ptrace,-kill --inh-caps=-all "$@"', "sh",
             sys.executable, "-c", HIDDEN_CHECKS, str(other.pid), repr(start), str(dead.pid), str(tmp_path)],
            capture_output=True, text=True)
        if checks.returncode != 0 and "mount" in checks.stderr:
            pytest.skip(f"cannot mount a hidepid /proc here: {checks.stderr.strip()}")
        assert checks.returncode == 0, checks.stderr
        found = json.loads(checks.stdout)
    finally:
        other.kill()
        other.wait()
    assert found == {"visible": False, "alive": [True, True, False], "lock stale": False,
                     "roots": ["inuse-other.json"], "switch tmp kept": True, "staging kept": True,
                     "trash findings": []}


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
    assert sorted(os.listdir(gens)) == ["2"]


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
    assert not {"sitedist.gc", "sitedist.profiles", "sitedist.develop"} & set(loaded), loaded
