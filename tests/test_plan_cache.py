"""The plan cache (sitedist.spec.plan_cache): with the cache warm, every kind of input change still
changes the plan, and the plan is then exactly the one resolved without any cache.

Each test resolves once (cold), checks that the next resolution comes from the cache (the resolver is
made to fail), changes one input, and resolves again with the cache warm: the result must equal a
resolution from scratch of the changed inputs, and differ from the first.
"""

import os

import pytest

from sitedist.host.probe import Compiler
from sitedist.host.toolchains import Host, Toolchain, _compiler_package, probe_key, tool_package
from sitedist.host.tools import Tool
from sitedist.ops import sync as flow
from sitedist.spec import lock as locks
from sitedist.spec import plan_cache
from sitedist.spec.config import load_config
from sitedist.spec.resolve import Resolver

from conftest import write

GCC = Compiler(name="gcc", version="12.2.0", prefix="/usr", cc="/usr/bin/gcc", cxx="/usr/bin/g++",
               fc="/usr/bin/gfortran", languages=("c", "c++", "fortran"), triple="x86_64-linux-gnu")
MAKE = Tool(name="make", version="4.3", prefix="/usr", executables=(("make", "/usr/bin/make"),))
SHA = "a" * 64


def host(compiler=GCC, make=MAKE):
    pkg = _compiler_package(compiler)
    return Host(packages={"gcc": pkg}, toolchains={"default": Toolchain("default", pkg, default=True)},
                tools={"make": [tool_package(make)]})


def recipe_a(**over):
    fields = {
        "name": "a",
        "description": "package a",
        "versions": {'"1.0"': f'{{url: "https://example.invalid/a-1.0.tar.gz", sha256: "{SHA}"}}'},
        "build": "autotools",
        "configure_args": '["--enable-x"]',
        "options": "{shared: {default: true}}",
        "env": "{prepend: {PATH: bin}}",
    }
    fields.update(over)
    lines = []
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


RECIPE_B = """
name: b
description: package b
versions:
  "2.0": {path: src}
depends:
  link: [a]
build: commands
commands:
  - make install PREFIX="$PREFIX"
"""


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    recipes = tmp_path / "recipes"
    write(recipes / "a.yml", recipe_a())
    write(recipes / "b.yml", RECIPE_B)
    write(recipes / "src" / "Makefile", "install:\n\ttrue\n")
    write(tmp_path / "base.yml", "packages:\n  a: {}\n")
    write(tmp_path / "site.yml", f"""
        extends: base.yml
        store: {tmp_path / 'store'}
        recipes: [recipes]
        packages:
          b: {{}}
        """)
    return tmp_path


def fingerprint(plan):
    """Everything a plan says that a sync uses: ids, documents, module fields, order, roots, targets."""
    return ([(n.key, n.kind, n.doc, locks.module_fields(n), n.explicit, n.target) for n in plan.nodes],
            [n.key for n in plan.roots], list(plan.targets))


def resolve(site, the_host=None, cached=True):
    config = load_config(str(site / "site.yml"))
    the_host, targets = the_host or host(), {"generic": "x86_64"}
    cache = plan_cache.PlanCache.for_config(config.path, flow.cache_dir()) if cached else plan_cache.PlanCache()
    key = plan_cache.plan_key(config, the_host, targets, probe_key(config.host.get("paths", [])))
    plan, _ = flow.resolve_plan(config, the_host, targets, cache, key)
    return fingerprint(plan)


def fail(*args, **kwargs):
    raise AssertionError("resolved although the plan cache should have answered")


def warm(site, monkeypatch, the_host=None):
    """Resolve cold, then check that the cache answers. Returns the fingerprint."""
    first = resolve(site, the_host)
    with monkeypatch.context() as m:
        m.setattr(Resolver, "plan", fail)
        assert resolve(site, the_host) == first
    return first


def check_change(site, monkeypatch, change, the_host=None, new_host=None, same_plan=False):
    before = warm(site, monkeypatch, the_host)
    change()
    after = resolve(site, new_host or the_host)
    assert after == resolve(site, new_host or the_host, cached=False)
    if same_plan:
        assert after == before
    else:
        assert after != before
    return after


def edit(path, old, new):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert old in text, (old, text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


CONFIG_EDITS = {
    "packages.version": ("site.yml", "  b: {}", '  b: {version: "2.0"}\n  a: {version: "0.9"}'),
    "packages.options": ("site.yml", "  b: {}", "  b: {}\n  a: {options: {shared: false}}"),
    "packages.recipe": ("site.yml", "  b: {}", "  b: {}\n  a: {recipe: a2}"),
    "packages (added)": ("site.yml", "  b: {}", "  b: {}\n  c: {recipe: a}"),
    "target": ("site.yml", "recipes:", "target: [generic]\nrecipes:"),
    "extends (base file)": ("base.yml", "a: {}", "a: {options: {shared: false}}"),
    "store": ("site.yml", "store: ", "store: /elsewhere"),
}


@pytest.mark.parametrize("what", sorted(CONFIG_EDITS))
def test_config_change_is_seen(stack, monkeypatch, what):
    file, old, new = CONFIG_EDITS[what]
    write(stack / "recipes" / "a2.yml", recipe_a(name="a2", configure_args='["--enable-y"]'))
    if what == "packages.version":
        write(stack / "recipes" / "a.yml", recipe_a(versions={
            '"1.0"': f'{{url: "https://example.invalid/a-1.0.tar.gz", sha256: "{SHA}"}}',
            '"0.9"': f'{{url: "https://example.invalid/a-0.9.tar.gz", sha256: "{"b" * 64}"}}'}))
    same = what in ("store", "target")   # store paths never enter a plan; 'generic' is the default target
    after = check_change(stack, monkeypatch, lambda: edit(stack / file, old, new), same_plan=same)
    if what == "packages (added)":
        assert any(key.startswith("c/") for key, *_ in after[0])


RECIPE_EDITS = {
    "versions (sha256)": {"versions": {'"1.0"': f'{{url: "https://example.invalid/a-1.0.tar.gz", sha256: "{"c" * 64}"}}'}},
    "versions (new)": {"versions": {'"1.0"': f'{{url: "https://example.invalid/a-1.0.tar.gz", sha256: "{SHA}"}}',
                                    '"1.1"': f'{{url: "https://example.invalid/a-1.1.tar.gz", sha256: "{SHA}"}}'}},
    "build": {"build": "make"},
    "configure_args": {"configure_args": '["--enable-z"]'},
    "make_args": {"make_args": '["V=1"]'},
    "pre_build": {"pre_build": '["echo hi"]'},
    "post_install": {"post_install": '["echo done"]'},
    "options": {"options": "{shared: {default: false}}"},
    "env": {"env": "{prepend: {PATH: sbin}}"},
    "description": {"description": "another text"},
    "homepage": {"homepage": "https://example.org/a"},
    "keywords": {"keywords": "[compression]"},
    "depends": {"depends": "{build: [b0]}"},
    "parallel": {"parallel": "false"},
}


@pytest.mark.parametrize("what", sorted(RECIPE_EDITS))
def test_recipe_field_change_is_seen(stack, monkeypatch, what):
    write(stack / "recipes" / "b0.yml", "name: b0\nversions: {\"1\": {path: src}}\nbuild: commands\n"
                                        "commands: [\"true\"]\n")
    check_change(stack, monkeypatch, lambda: write(stack / "recipes" / "a.yml", recipe_a(**RECIPE_EDITS[what])))


def test_any_byte_of_a_recipe_file_counts(stack, monkeypatch):
    """Whole files are covered, not selected fields: a comment (which changes no plan) is still a miss."""
    warm(stack, monkeypatch)
    with open(stack / "recipes" / "a.yml", "a", encoding="utf-8") as f:
        f.write("# a comment\n")
    calls = []
    real = Resolver.plan
    monkeypatch.setattr(Resolver, "plan", lambda self: calls.append(1) or real(self))
    resolve(stack)
    assert calls == [1]


def test_edit_that_keeps_size_and_mtime_is_seen(stack, monkeypatch):
    path = stack / "recipes" / "a.yml"
    before = warm(stack, monkeypatch)
    st = os.stat(path)
    edit(path, "--enable-x", "--enable-q")   # same length
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = resolve(stack)
    assert after != before and after == resolve(stack, cached=False)


def test_patch_change_is_seen(stack, monkeypatch):
    write(stack / "recipes" / "fix.patch", "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    write(stack / "recipes" / "a.yml", recipe_a(patches="[{file: fix.patch}]"))
    check_change(stack, monkeypatch, lambda: edit(stack / "recipes" / "fix.patch", "+b", "+c"))


def test_local_source_change_is_seen(stack, monkeypatch):
    check_change(stack, monkeypatch, lambda: write(stack / "recipes" / "src" / "new.c", "int x;\n"))


def test_recipe_shadowed_by_an_earlier_directory_is_seen(stack, monkeypatch):
    edit(stack / "site.yml", "recipes: [recipes]", "recipes: [front, recipes]")
    os.makedirs(stack / "front")
    check_change(stack, monkeypatch,
                 lambda: write(stack / "front" / "a.yml", recipe_a(configure_args='["--front"]')))


def test_variable_in_a_config_path_is_seen(stack, monkeypatch):
    os.makedirs(stack / "other")
    write(stack / "other" / "a.yml", recipe_a(configure_args='["--other"]'))
    write(stack / "other" / "b.yml", RECIPE_B.replace("{path: src}", "{path: ../recipes/src}"))
    edit(stack / "site.yml", "recipes: [recipes]", "recipes: [$H1_RECIPES]")
    monkeypatch.setenv("H1_RECIPES", "recipes")
    check_change(stack, monkeypatch, lambda: monkeypatch.setenv("H1_RECIPES", "other"))


def test_probe_result_change_is_seen(stack, monkeypatch):
    newer = Compiler(name="gcc", version="12.3.0", prefix="/usr", cc="/usr/bin/gcc", cxx="/usr/bin/g++",
                     fc="/usr/bin/gfortran", languages=("c", "c++", "fortran"), triple="x86_64-linux-gnu")
    check_change(stack, monkeypatch, lambda: None, the_host=host(), new_host=host(compiler=newer))
    newer_make = Tool(name="make", version="4.4", prefix="/usr", executables=(("make", "/usr/bin/make"),))
    check_change(stack, monkeypatch, lambda: None, the_host=host(), new_host=host(make=newer_make))


def test_change_in_a_searched_directory_is_seen(stack, monkeypatch):
    """Build tools a recipe names are looked up while resolving; a directory on PATH that changes (a tool
    installed or replaced) makes the cached plan stale, as it makes the probe cache stale."""
    bindir = stack / "bin"
    os.makedirs(bindir)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    warm(stack, monkeypatch)
    write(bindir / "newtool", "#!/bin/sh\n")
    calls = []
    real = Resolver.plan
    monkeypatch.setattr(Resolver, "plan", lambda self: calls.append(1) or real(self))
    resolve(stack)
    assert calls == [1]


def test_sitedist_code_change_is_seen(stack, monkeypatch):
    warm(stack, monkeypatch)
    monkeypatch.setattr(plan_cache, "code_digest", lambda: "another sitedist")
    calls = []
    real = Resolver.plan
    monkeypatch.setattr(Resolver, "plan", lambda self: calls.append(1) or real(self))
    resolve(stack)
    assert calls == [1]


def test_damaged_entry_is_resolved_again(stack, monkeypatch):
    before = warm(stack, monkeypatch)
    [entry] = [p for p in os.listdir(stack / "cache" / "sitedist") if p.startswith("plan-")]
    path = stack / "cache" / "sitedist" / entry
    with open(path, "rb") as f:
        head = f.readline()
    with open(path, "wb") as f:
        f.write(head + b"truncated")
    assert resolve(stack) == before


def entry_of(site):
    config = load_config(str(site / "site.yml"))
    cache = plan_cache.PlanCache.for_config(config.path, flow.cache_dir())
    key = plan_cache.plan_key(config, host(), {"generic": "x86_64"}, probe_key(config.host.get("paths", [])))
    cache.header(key)
    return cache


def test_facts_belong_to_their_entry(stack, monkeypatch):
    """What is derived from a plan (a lock's digest) is kept beside its entry; a plan resolved again
    under the same key (a recipe changed) starts with no facts."""
    warm(stack, monkeypatch)
    entry_of(stack).remember("lock digest", "d1")
    assert entry_of(stack).facts() == {"lock digest": "d1"}
    edit(stack / "recipes" / "a.yml", "--enable-x", "--enable-y")
    resolve(stack)
    assert entry_of(stack).facts() == {}


def test_documents_come_back_when_needed(stack, monkeypatch):
    """A cached plan's recipes come without their parsed documents; restored, they are the documents
    (with file:line marks) a fresh resolution has, so errors and locks say the same."""
    warm(stack, monkeypatch)
    config = load_config(str(stack / "site.yml"))
    cache = plan_cache.PlanCache.for_config(config.path, flow.cache_dir())
    key = plan_cache.plan_key(config, host(), {"generic": "x86_64"}, probe_key(config.host.get("paths", [])))
    plan, _ = cache.load(key)
    [a] = [n for n in plan.nodes if n.name == "a"]
    assert a.recipe.raw is None and a.recipe.where("configure_args") == a.recipe.path
    cache.restore_documents(plan)
    assert a.recipe.where("configure_args") == f"{a.recipe.path}:6"
    fresh, _ = flow.resolve_plan(config, host(), {"generic": "x86_64"}, plan_cache.PlanCache(), key)
    [b] = [n for n in fresh.nodes if n.name == "a"]
    assert locks.recipe_entry(a.recipe, str(stack)) == locks.recipe_entry(b.recipe, str(stack))


def test_recipes_are_unpickled_when_first_used(stack, monkeypatch):
    warm(stack, monkeypatch)
    config = load_config(str(stack / "site.yml"))
    cache = plan_cache.PlanCache.for_config(config.path, flow.cache_dir())
    key = plan_cache.plan_key(config, host(), {"generic": "x86_64"}, probe_key(config.host.get("paths", [])))
    plan, _ = cache.load(key)
    recipes = [n.recipe for n in plan.nodes if n.recipe is not None]
    assert recipes and all(isinstance(r, plan_cache.LazyRecipe) for r in recipes)
    assert recipes[0]._recipes.items is None          # nothing unpickled yet
    assert sorted(r.name for r in recipes) == ["a", "b"]
    assert recipes[0]._recipes.items is not None
