"""Fixes from a code review: gc and verify only ever sweep a sitedist store, and only what is named like
an artifact; git sources fetched concurrently; a develop environment's activate script with a hostile
directory name; group-writable GC directories; process liveness under /proc hidepid=2; GC racing a prune."""

import os

from conftest import run_cli, tree_digest, write
from storetools import config, synthetic

from sitedist.core.store import Store


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
