"""Fixes from a code review: gc and verify only ever sweep a sitedist store, and only what is named like
an artifact; git sources fetched concurrently; a develop environment's activate script with a hostile
directory name; group-writable GC directories; process liveness under /proc hidepid=2; GC racing a prune."""

import os
import subprocess
import sys
import threading

import pytest
from conftest import run_cli, tree_digest, write
from storetools import config, synthetic

from sitedist.core.sources import Fetcher
from sitedist.core.store import Store
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


_FETCH = ("import sys; from sitedist.core.sources import Fetcher; "
          "Fetcher(sys.argv[1], lock_dir=sys.argv[2]).fetch_git({'git': sys.argv[3], 'commit': sys.argv[4]}, sys.argv[5])")


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
