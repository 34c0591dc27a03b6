"""The no-op fast path of ``sitedist sync`` (sitedist.ops.noop): taken only when nothing a sync would do
has changed; any change (a recipe, a template, an artifact, a module tree or profile switched, a lock
file, the history) makes the next sync take the full path and publish or record what changed.

The fast path is called in-process (``noop.unchanged``: lines to print, or None for "take the full
path") between real ``sitedist sync`` runs; the CLI's output with and without it is compared.
"""

import os
import shutil

import pytest

from conftest import run_cli, write

from sitedist.ops import noop
from test_lock import config_text, toy_recipes


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # the CLI runs inherit it
    recipes = toy_recipes(tmp_path / "recipes", 3)
    shutil.copytree(os.path.join(os.path.dirname(noop.__file__), "..", "templates"), tmp_path / "templates")
    config = write(tmp_path / "site.yml", config_text(
        tmp_path / "store", [recipes], {"t2": None}, modules=f"{tmp_path / 'modules'}, templates: {tmp_path / 'templates'}",
        profile=(["t2"], tmp_path / "profiles" / "p")))
    run_cli("sync", config)
    return tmp_path, config


def quick(config):
    return noop.unchanged(config, config + ".lock")


def current(root):
    return os.readlink(os.path.join(root, "current"))


def test_unchanged_sync_takes_the_fast_path_and_says_what_the_full_path_says(stack):
    tmp_path, config = stack
    lines = quick(config)
    assert lines is not None
    fast = run_cli("sync", config)
    full = run_cli("sync", config, "--reprobe")   # --reprobe always takes the full path
    assert (fast.stdout, fast.stderr) == (full.stdout, full.stderr)
    assert fast.stderr.splitlines() == lines[0] and fast.stdout.splitlines() == lines[1]
    assert "modules: unchanged" in fast.stdout and "unchanged)" in fast.stdout and "nothing to build" in fast.stdout


def test_template_change_is_published(stack):
    tmp_path, config = stack
    before = current(tmp_path / "modules")
    with open(tmp_path / "templates" / "modulefile.lua.j2", "a") as f:
        f.write("-- site footer from a template\n")
    assert quick(config) is None
    out = run_cli("sync", config).stdout
    assert "modules: generation 2 published" in out, out
    assert current(tmp_path / "modules") != before
    lua = open(tmp_path / "modules" / "lmod" / "t2" / "1.0.lua").read()
    assert "site footer from a template" in lua
    assert quick(config) is not None


def test_recipe_change_is_built_and_published(stack):
    tmp_path, config = stack
    with open(tmp_path / "recipes" / "t2.yml", "a") as f:   # what the module sets: no new id
        f.write("env: {set: {T2_FLAVOUR: new}}\n")
    assert quick(config) is None
    out = run_cli("sync", config).stdout
    assert "\nbuilt" not in out and "nothing to build" in out and "generation 2 published" in out, out
    assert "T2_FLAVOUR" in open(tmp_path / "modules" / "lmod" / "t2" / "1.0.lua").read()
    assert quick(config) is not None
    text = open(tmp_path / "recipes" / "t2.yml").read()   # the build script: a new id
    write(tmp_path / "recipes" / "t2.yml", text.replace("chmod +x", "chmod 755"))
    assert quick(config) is None
    out = run_cli("sync", config).stdout
    assert "built 1: t2/1.0-" in out and "generation 3 published" in out, out


def test_artifact_removed_or_rebuilt_is_seen(stack):
    tmp_path, config = stack
    [entry] = os.listdir(tmp_path / "store" / "t1")
    prefix = tmp_path / "store" / "t1" / entry
    for dirpath, dirnames, filenames in os.walk(prefix):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(prefix)
    assert quick(config) is None
    assert "built 1: t1/1.0-" in run_cli("sync", config).stdout
    assert quick(config) is not None


def test_module_tree_or_profile_switched_is_published_again(stack):
    tmp_path, config = stack
    with open(tmp_path / "templates" / "modulefile.lua.j2", "a") as f:
        f.write("-- v2\n")
    run_cli("sync", config)
    run_cli("modules", config, "--rollback")
    assert quick(config) is None
    assert "generation 3 published" in run_cli("sync", config).stdout
    assert quick(config) is not None
    run_cli("profile", config, "rollback", "p", check=False)
    os.unlink(tmp_path / "modules" / "lmod")   # a damaged tree: its stable link gone
    assert quick(config) is None
    run_cli("sync", config)
    assert os.readlink(tmp_path / "modules" / "lmod") == "current/lmod"
    assert quick(config) is not None
    catalog = tmp_path / "modules" / "catalog"   # the catalog page's stable link, as the trees'
    assert os.readlink(catalog) == "current/catalog"
    os.unlink(catalog)
    assert quick(config) is None
    run_cli("sync", config)
    assert os.readlink(catalog) == "current/catalog"


def test_lock_file_and_history_are_kept_up_to_date(stack):
    tmp_path, config = stack
    run_cli("lock", config)
    assert quick(config) is not None        # a lock of this very plan: nothing to warn about or rewrite
    assert noop.lock_unchanged(config, config + ".lock") == 4
    assert "(unchanged)" in run_cli("lock", config).stdout
    text = open(config + ".lock").read()
    write(config + ".lock", text.replace('"t0"', '"tX"', 1))
    assert noop.lock_unchanged(config, config + ".lock") is None
    assert "(unchanged)" not in run_cli("lock", config).stdout
    assert open(config + ".lock").read() == text
    assert noop.unchanged(config, config + ".lock", locked=True) is not None
    with open(config + ".lock", "a") as f:
        f.write(" ")
    assert quick(config) is None
    assert noop.unchanged(config, config + ".lock", locked=True) is None
    assert "lock:" in run_cli("sync", config).stdout   # rewritten
    os.unlink(config + ".lock")
    assert noop.unchanged(config, config + ".lock", locked=True) is None
    assert run_cli("sync", config, "--locked", check=False).returncode != 0


def test_config_error_is_still_an_error(stack):
    tmp_path, config = stack
    with open(config, "a") as f:
        f.write("bogus_key: 1\n")
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0 and "bogus_key" in proc.stderr


def test_new_git_commit_is_recorded(stack):
    tmp_path, config = stack
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    import subprocess

    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "site.yml", "recipes"], check=True)
    subprocess.run(git + ["commit", "-qm", "v1"], check=True)
    assert quick(config) is None            # the history's newest record has no git state yet
    assert "history: recorded as sync 2" in run_cli("sync", config).stdout
    assert quick(config) is not None
    write(tmp_path / "NOTES", "unrelated\n")
    subprocess.run(git + ["add", "NOTES"], check=True)
    subprocess.run(git + ["commit", "-qm", "v2"], check=True)
    assert quick(config) is None
    assert "history: recorded as sync 3" in run_cli("sync", config).stdout
