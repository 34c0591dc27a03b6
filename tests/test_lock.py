"""Lock files, sync history and diffs (issue 14), as an admin uses them: the real CLI, real builds.

- user B, with another store, home and checkout path, reproduces user A's committed lock byte for byte
  and syncs it with --locked to the same ids;
- each kind of drift (recipe edit, option, source checksum, compiler identity, sitedist protocol) makes
  ``sync --locked`` fail before building, naming the package and the input, with store, module tree and
  profile unchanged;
- three git commits of a config are three history entries; going back to the first switches the module
  tree without building;
- ``sitedist diff`` between two configs names the right packages and reasons;
- a truncated, hand-edited or future lock is an error naming the file and line.
"""

import gzip
import json
import os
import shutil
import subprocess

import pytest

from conftest import RECIPES, SOURCES, run_cli, tree_digest, write
from modtools import tree_files

from sitedist.core.hashing import artifact_id
from sitedist.core.history import history_dir
from sitedist.core.store import Store


def toy_recipes(d, n=3, salt=""):
    """t0..t{n-1}: t_i links t_{i-1}; t0 has an option; every one installs bin/<name> saying its name.
    A ``salt`` (a no-op command) gives them ids of their own: tests that share a store and must find the
    drifted plan unbuilt cannot see each other's artifacts."""
    write(d / "src" / "README", "toy sources\n")
    for i in range(n):
        lines = [f"name: t{i}", f"description: toy {i}", 'versions: {"1.0": {path: src}}']
        lines += [f"depends: {{link: [t{i - 1}]}}"] if i else ["options: {fast: {default: false}}"]
        lines += ["build: commands", "commands:", '  - mkdir -p "$PREFIX/bin"',
                  f"""  - printf '#!/bin/sh\\necho t{i}\\n' > "$PREFIX/bin/t{i}\"""",
                  f'  - chmod +x "$PREFIX/bin/t{i}"'] + ([f"  - ': {salt}'"] if salt else [])
        write(d / f"t{i}.yml", "\n".join(lines) + "\n")
    return d


def config_text(store, recipes, packages, modules=None, profile=None, extra=""):
    lines = [f"store: {store}", f"recipes: [{', '.join(map(str, recipes))}]", f"mirrors: [{SOURCES}]"]
    if modules:
        lines.append(f"modules: {{root: {modules}}}")  # may carry more keys: "ROOT, keep: 1"
    lines.append("packages:")
    lines += [f"  {name}: {body or '{}'}" for name, body in packages.items()]
    if profile:
        lines.append(f"profiles:\n  p: {{packages: [{', '.join(profile[0])}], root: {profile[1]}}}")
    return "\n".join(lines) + "\n" + extra


def artifact_ids(store):
    return sorted(f"{n}/{e}" for n in os.listdir(store) if not n.startswith(".")
                  for e in os.listdir(os.path.join(store, n)))


def lock_ids(path):
    with open(path) as f:
        return sorted(json.load(f)["artifacts"])


# --- user A and user B ---------------------------------------------------------------------------

def test_user_b_reproduces_user_a_lock_and_ids(tmp_path, shared_store):
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    repo = a_home / "stack"
    toy_recipes(repo / "recipes")
    write(repo / "site.yml", config_text(shared_store, ["recipes", RECIPES], {"t2": None, "zlib": None}))
    env_a = {**os.environ, "HOME": str(a_home), "XDG_CACHE_HOME": str(a_home / ".cache")}
    run_cli("sync", repo / "site.yml", "-j", "2", env=env_a)
    first = run_cli("lock", repo / "site.yml", env=env_a).stdout
    assert "artifacts" in first
    committed = (repo / "site.yml.lock").read_bytes()
    run_cli("lock", repo / "site.yml", env=env_a)
    assert (repo / "site.yml.lock").read_bytes() == committed, "locking twice must give the same bytes"
    assert str(a_home) not in committed.decode(), "a lock holds no path of user A's"

    # User B: a copy of the config, recipes and lock elsewhere, another home and so another store.
    shutil.copytree(repo, b_home / "checkout" / "stack")
    b_repo = b_home / "checkout" / "stack"
    edit(b_repo / "site.yml", f"store: {shared_store}", f"store: {b_home / 'store'}")  # B's own store
    env_b = {**os.environ, "HOME": str(b_home), "XDG_CACHE_HOME": str(b_home / ".cache")}
    proc = run_cli("sync", b_repo / "site.yml", "--locked", "-j", "2", env=env_b)
    assert "built" in proc.stdout
    assert (b_repo / "site.yml.lock").read_bytes() == committed, "--locked never rewrites the lock"
    b_ids = artifact_ids(b_home / "store")
    assert b_ids == lock_ids(repo / "site.yml.lock")
    assert all(os.path.isdir(os.path.join(shared_store, key)) for key in b_ids)  # A's artifacts: the same ids
    assert len(b_ids) == 6  # gcc, make (zlib's build tool), t0, t1, t2, zlib
    # B's own lock of the same inputs is A's, byte for byte.
    run_cli("lock", b_repo / "site.yml", "-o", b_home / "again.lock", env=env_b)
    again = json.loads((b_home / "again.lock").read_text())
    assert again["artifacts"] == json.loads(committed)["artifacts"]
    assert again["recipes"]["zlib"]["sha256"] == json.loads(committed)["recipes"]["zlib"]["sha256"]


# --- drift -----------------------------------------------------------------------------------------

@pytest.fixture
def drift_stack(tmp_path, shared_store):
    """Real zlib and libpng (their recipes copied, so a test can edit them) and toy t0..t1 with a
    module tree and a profile, synced into the shared store, and locked."""
    recipes = tmp_path / "recipes"
    toy_recipes(recipes, 2, salt=tmp_path.name)
    for name in ("zlib", "libpng"):
        shutil.copy(os.path.join(RECIPES, f"{name}.yml"), recipes / f"{name}.yml")
    modules, prof = tmp_path / "modules", tmp_path / "profiles" / "p"
    config = write(tmp_path / "site.yml", config_text(shared_store, [recipes], {"libpng": None, "t1": None},
                                                      modules=modules, profile=(["libpng", "t1"], prof)))
    run_cli("sync", config, "-j", "2")
    run_cli("lock", config)
    # The shared store is written by other test workers meanwhile: what must stay unchanged there is
    # this config's history, and (checked in locked_fails) every artifact of the drifted plan missing.
    history = history_dir(Store(str(shared_store)), config)
    return tmp_path, config, recipes, [modules, tmp_path / "profiles", history]


def locked_fails(config, *expected, env=None, plan_built=False):
    proc = run_cli("sync", config, "--locked", check=False, env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "nothing was built or changed" in proc.stderr and "Traceback" not in proc.stderr
    for line in expected:
        assert line in proc.stderr, proc.stderr
    assert "[build]" not in proc.stderr and "built" not in proc.stdout
    # Nothing of the drifted plan was built: what it lacks is still missing.
    plan = json.loads(run_cli("sync", config, "--dry-run", "--json", env=env).stdout)["artifacts"]
    missing = [a for a in plan if a["state"] == "missing"]
    assert (plan_built or missing) and all(not os.path.exists(a["prefix"]) for a in missing)
    return proc.stderr


def edit(path, old, new):
    text = open(path).read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def test_drift_recipe_edit(drift_stack):
    tmp_path, config, recipes, trees = drift_stack
    before = tree_digest(*trees)
    edit(recipes / "zlib.yml", "build: autotools", "configure_args: [--static]\nbuild: autotools")
    err = locked_fails(config, "zlib 1.2.13: id changed: recipe changed: configure_args",
                       "libpng 1.6.39: id changed: link dependency zlib changed (recipe changed: configure_args)")
    assert "t1" not in err
    assert tree_digest(*trees) == before


def test_drift_option_change(drift_stack):
    tmp_path, config, recipes, trees = drift_stack
    before = tree_digest(*trees)
    edit(config, "t1: {}", "t1: {}\n  t0: {options: {fast: true}}")
    locked_fails(config, "t0 1.0: id changed: option fast false -> true",
                 "t1 1.0: id changed: link dependency t0 changed (option fast false -> true)")
    assert tree_digest(*trees) == before


def test_drift_new_source_checksum(drift_stack):
    tmp_path, config, recipes, trees = drift_stack
    before = tree_digest(*trees)
    edit(recipes / "libpng.yml", "a00e9d2f2f664186", "b00e9d2f2f664186")
    locked_fails(config, "libpng 1.6.39: id changed: source sha256 a00e9d2f2f66 -> b00e9d2f2f66")
    assert tree_digest(*trees) == before


def test_drift_compiler_identity(drift_stack):
    """Another machine's gcc reports 12.3.0: every package built with it changes, named by its compiler."""
    tmp_path, config, recipes, trees = drift_stack
    before = tree_digest(*trees)
    fake = tmp_path / "newer-gcc" / "bin"
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    for tool in ("gcc", "g++", "gfortran"):
        real = shutil.which(tool)
        write(fake / tool, f"""#!/bin/sh
            case "$1" in -dumpfullversion|-dumpversion) echo 99.1.0; exit 0;; esac
            exec {real} "$@"
            """)
        os.chmod(fake / tool, 0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    err = locked_fails(config, f"libpng 1.6.39: id changed: compiler gcc {version} -> 99.1.0",
                       f"zlib 1.2.13: id changed: compiler gcc {version} -> 99.1.0", env=env)
    assert f"gcc 99.1.0: id changed: compiler gcc {version} -> 99.1.0" in err
    assert f"t1 1.0: id changed: compiler gcc {version} -> 99.1.0; link dependency t0 changed" in err
    assert tree_digest(*trees) == before


def test_drift_sitedist_protocol(drift_stack):
    """A lock written by a sitedist with an older builder protocol: every built package differs, and
    says so; host compilers (whose ids do not involve the builder) do not."""
    tmp_path, config, recipes, trees = drift_stack
    before = tree_digest(*trees)
    lock_file = f"{config}.lock"
    lock = json.load(open(lock_file))
    lock["sitedist"]["protocols"]["builder"] -= 1
    old_ids = {}
    for key in sorted(lock["artifacts"], key=lambda k: k.startswith(("t1", "libpng"))):  # dependencies first
        entry = lock["artifacts"].pop(key)
        doc = entry["doc"]
        if "builder" in doc:
            doc["builder"] -= 1
            for deps in doc["depends"].values():
                for dep in deps:
                    deps[dep] = old_ids.get((dep, deps[dep]), deps[dep])
        new_id = artifact_id(doc)
        old_ids[(entry["name"], entry["id"])] = new_id
        entry["id"] = new_id
        lock["artifacts"][f"{entry['name']}/{entry['version']}-{new_id}"] = entry
    with open(lock_file, "w") as f:
        json.dump(lock, f, indent=1, sort_keys=True)
    builder = lock["sitedist"]["protocols"]["builder"]
    err = locked_fails(config, f"zlib 1.2.13: id changed: sitedist builder protocol {builder} -> {builder + 1}",
                       f"t0 1.0: id changed: sitedist builder protocol {builder} -> {builder + 1}",
                       plan_built=True)  # the lock is older than the store, whose artifacts are the plan's
    assert "gcc" not in err.split("hint:")[0].replace("libpng", "")
    assert tree_digest(*trees) == before


def test_sync_without_locked_warns_and_rewrites(drift_stack):
    tmp_path, config, recipes, trees = drift_stack
    edit(config, "t1: {}", "t1: {}\n  t0: {options: {fast: true}}")
    proc = run_cli("sync", config)
    assert "resolves differently" in proc.stderr and "option fast false -> true" in proc.stderr
    assert "rewritten" in proc.stdout
    assert run_cli("sync", config, "--locked").returncode == 0
    assert any(k.startswith("t0/") for k in lock_ids(f"{config}.lock"))


# --- history -----------------------------------------------------------------------------------------

def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}).stdout.strip()


def test_history_three_commits_and_back_to_v1_without_building(tmp_path):
    repo = tmp_path / "stack"
    recipes = toy_recipes(repo / "recipes", 3)
    modules = tmp_path / "modules"
    site = repo / "site.yml"
    git(tmp_path, "init", "-q", str(repo))
    commits = []
    # v1: t1; v2: t0 built with an option; v3: t2 added.
    for packages in ({"t1": None}, {"t1": None, "t0": "{options: {fast: true}}"},
                     {"t1": None, "t0": "{options: {fast: true}}", "t2": None}):
        write(site, config_text(tmp_path / "store", ["recipes"], packages, modules=modules,
                                profile=(["t1"], tmp_path / "prof")))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"v{len(commits) + 1}")
        commits.append(git(repo, "rev-parse", "HEAD"))
        run_cli("sync", site, "-j", "2")
    hist = run_cli("history", site).stdout.splitlines()
    assert len(hist) == 3, hist
    for line, n, commit in zip(hist, (1, 2, 3), commits):
        assert line.split()[0] == str(n) and commit[:12] in line and "dirty" not in line
    records = json.loads(run_cli("history", site, "--json").stdout)
    assert [r["git"]["commit"] for r in records] == commits

    v3_tree = os.path.realpath(modules / "current")
    store_before = tree_digest(tmp_path / "store")
    t1_v1 = json.loads(run_cli("diff", f"{site}@1", f"{site}@3", "--json", check=False).stdout)
    assert {c["package"] for c in t1_v1} == {"t0 1.0", "t1 1.0", "t2 1.0"}
    proc = run_cli("sync", site, "--from-history", "1")
    assert "nothing built" in proc.stdout
    assert tree_digest(tmp_path / "store") == store_before, "going back built or changed nothing in the store"
    assert os.path.realpath(modules / "current") != v3_tree
    # The module tree is v1's again: t2 is gone, t1 and t0 point at v1's artifacts.
    v1_lock = json.loads(gzip.open(next((tmp_path / "store" / ".sitedist" / "history").glob("*/1.lock.json.gz"))).read())
    v1_ids = {e["name"]: e["id"] for e in v1_lock["artifacts"].values()}
    lua = {str(p.relative_to(modules / "lmod")): p.read_text() for p in tree_files(modules / "lmod", "*.lua")}
    assert not any(name.startswith("t2") for name in lua) and any(name.startswith("t1") for name in lua), lua
    text = "\n".join(lua.values())
    assert v1_ids["t1"] in text and v1_ids["t0"] in text and "t2" not in text
    assert os.path.realpath(tmp_path / "prof" / "bin" / "t1").startswith(str(tmp_path / "store" / "t1" / f"1.0-{v1_ids['t1']}"))
    # A sync of the config (v3) publishes v3 again, without building.
    assert "nothing to build" in run_cli("sync", site).stdout

    # A past sync whose artifacts were removed: a clear error, nothing changed.
    write(site, config_text(tmp_path / "store", ["recipes"], {"t2": None}, modules=modules))
    bad = run_cli("sync", site, "--from-history", "9", check=False)
    assert bad.returncode != 0 and "no sync 9" in bad.stderr


# --- diff ---------------------------------------------------------------------------------------------

def test_diff_two_configs(tmp_path):
    recipes = toy_recipes(tmp_path / "recipes", 3)
    a = write(tmp_path / "a.yml", config_text(tmp_path / "store", [recipes, RECIPES], {"t1": None, "zlib": None}))
    b_recipes = tmp_path / "recipes-b"
    shutil.copytree(recipes, b_recipes)
    edit(b_recipes / "t0.yml", 'mkdir -p "$PREFIX/bin"', 'mkdir -p "$PREFIX/bin" "$PREFIX/share"')
    b = write(tmp_path / "b.yml", config_text(tmp_path / "store", [b_recipes, RECIPES], {"t1": None, "t2": None,
                                                                                "libpng": None}))
    proc = run_cli("diff", a, b, check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert "t2 1.0: added" in out and "libpng 1.6.39: added" in out
    assert "zlib" not in out, "zlib is unchanged (libpng depends on the same zlib)"
    assert "t0 1.0: id changed" in out and "recipe changed: commands" in out
    assert '-mkdir -p "$PREFIX/bin"' in out and '+mkdir -p "$PREFIX/bin" "$PREFIX/share"' in out
    assert "t1 1.0: id changed" in out and "link dependency t0 changed (recipe changed: commands)" in out
    assert out.rstrip().endswith("2 added, 0 removed, 2 changed")
    assert run_cli("diff", a, a).stdout.rstrip().endswith("no differences")
    # A lock file against a config: the same answer.
    run_cli("lock", a)
    assert run_cli("diff", f"{a}.lock", b, check=False).stdout.splitlines()[2:] == out.splitlines()[2:]
    removed = run_cli("diff", b, a, "--brief", check=False).stdout
    assert "t2 1.0: removed" in removed and "libpng 1.6.39: removed" in removed


def test_show_why_against_last_sync(tmp_path):
    recipes = toy_recipes(tmp_path / "recipes", 2)
    config = write(tmp_path / "site.yml", config_text(tmp_path / "store", [recipes], {"t1": None}))
    run_cli("sync", config)
    assert "unchanged since sync 1" in run_cli("show", config, "t1", "--why").stdout
    edit(config, "t1: {}", "t1: {}\n  t0: {options: {fast: true}}")
    out = run_cli("show", config, "t1", "--why").stdout
    assert "in sync 1 ->" in out and "link dependency t0 changed (option fast false -> true)" in out


# --- bad lock files -----------------------------------------------------------------------------------

@pytest.fixture
def locked(tmp_path):
    recipes = toy_recipes(tmp_path / "recipes", 2)
    config = write(tmp_path / "site.yml", config_text(tmp_path / "store", [recipes], {"t1": None}))
    run_cli("lock", config)
    return config, f"{config}.lock"


def bad_lock(config, lock_file, *expected):
    for argv in (("sync", config, "--locked"), ("diff", lock_file, config)):
        proc = run_cli(*argv, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        for text in expected:
            assert text in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(os.path.dirname(config), "store")), "nothing was written"


def test_truncated_lock(locked):
    config, lock_file = locked
    text = open(lock_file).read()
    cut = text[:len(text) // 2]
    open(lock_file, "w").write(cut)
    bad_lock(config, lock_file, f"{lock_file}:{cut.count(chr(10)) + 1}: lock file is truncated")


def test_hand_edited_lock(locked):
    config, lock_file = locked
    text = open(lock_file).read()
    lock = json.loads(text)
    key = next(k for k in lock["artifacts"] if k.startswith("t0/"))
    edited = text.replace('"fast": false', '"fast": true', 1)
    open(lock_file, "w").write(edited)
    line = edited[:edited.index(f'"{key}": {{')].count("\n") + 1
    bad_lock(config, lock_file, f"{lock_file}:{line}: artifact {key}: id", "does not match its document",
             "edited by hand")


def test_future_protocol_lock(locked):
    config, lock_file = locked
    text = open(lock_file).read()
    lock = json.loads(text)
    hash_protocol = lock["sitedist"]["protocols"]["hash"]
    edited = text.replace(f'"hash": {hash_protocol}', f'"hash": {hash_protocol + 1}')
    open(lock_file, "w").write(edited)
    line = edited[:edited.index('"hash": ')].count("\n") + 1
    bad_lock(config, lock_file, f"{lock_file}:{line}: the lock was written with hash protocol {hash_protocol + 1}",
             "upgrade sitedist")


def test_gc_keeps_the_last_recorded_syncs(tmp_path):
    """Without a module tree or profile, what keeps a past sync's artifacts is the history: the newest
    K recorded syncs (history: keep, or gc --keep-syncs). Going back to a sync GC removed is refused."""
    recipes = toy_recipes(tmp_path / "recipes", 2)
    store = tmp_path / "store"
    config = write(tmp_path / "site.yml", config_text(store, [recipes], {"t1": None}))
    run_cli("sync", config)
    v1 = artifact_ids(store)
    edit(config, "t1: {}", "t1: {}\n  t0: {options: {fast: true}}")
    run_cli("sync", config)
    v2 = artifact_ids(store)
    assert len(v2) == len(v1) + 2  # t0 and t1 again, with the option
    dry = run_cli("gc", config, "--dry-run", "--keep-syncs", "2").stdout
    assert ": would remove 0 artifacts" in dry, dry
    # Default: history keeps nothing (no module tree, profile or root here: every artifact would go).
    assert f": would remove {len(v2)} artifacts" in run_cli("gc", config, "--dry-run").stdout
    edit(config, "t0: {options: {fast: true}}", "t0: {options: {fast: true}}\nhistory: {keep: 2}")
    run_cli("gc", config)
    assert artifact_ids(store) == v2, "history keep 2 keeps both syncs"
    edit(config, "history: {keep: 2}", "history: {keep: 1}")
    run_cli("gc", config)
    left = artifact_ids(store)
    assert sorted(left) == sorted(k for k in v2 if k not in v1 or k.startswith("gcc/")), (v1, v2, left)
    before = tree_digest(store)
    bad = run_cli("sync", config, "--from-history", "1", check=False)
    assert bad.returncode == 1 and "no longer in the store" in bad.stderr and "t1 1.0" in bad.stderr
    assert tree_digest(store) == before


def test_back_to_a_collected_sync_builds_it_from_its_commit(tmp_path):
    """Sync v1 and v2 (v2 edits a recipe) from git commits; GC removes v1's artifacts; going back to v1
    exports v1's commit, checks it resolves to v1's recorded ids, builds just what is missing (with v1's
    recipe, not today's) and publishes v1's module tree."""
    repo = tmp_path / "stack"
    toy_recipes(repo / "recipes", 2)
    site = repo / "site.yml"
    modules = tmp_path / "modules"
    write(site, config_text(tmp_path / "store", ["recipes"], {"t1": None},
                            modules=f"{modules}, keep: 1") + "history: {keep: 1}\n")
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    run_cli("sync", site)
    v1 = artifact_ids(tmp_path / "store")
    edit(repo / "recipes" / "t0.yml", "echo t0", "echo t0 v2")
    git(repo, "commit", "-q", "-am", "v2")
    run_cli("sync", site)
    run_cli("gc", site)
    gone = [k for k in v1 if not k.startswith("gcc/")]
    assert gone and not any(os.path.exists(tmp_path / "store" / k) for k in gone)
    proc = run_cli("sync", site, "--from-history", "1")
    assert "built 2 missing artifact(s) from commit" in proc.stdout, proc.stdout
    assert all(os.path.exists(tmp_path / "store" / k) for k in v1)
    out = subprocess.run([str(tmp_path / "store" / next(k for k in v1 if k.startswith("t0/")) / "bin" / "t0")],
                         capture_output=True, text=True).stdout
    assert out == "t0\n", "v1's recipe built it, not today's"
    text = "\n".join(p.read_text() for p in tree_files(modules / "lmod", "*.lua"))
    assert all(k.split("-")[-1] in text for k in gone)
    assert open(repo / "recipes" / "t0.yml").read().count("echo t0 v2") == 1, "the work tree is untouched"
