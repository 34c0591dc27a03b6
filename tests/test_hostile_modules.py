"""Hostile text and modulefiles (issue 11, items 3 and 8).

1. The modulefile-injection table: recipes and a config full of Tcl, Lua and shell syntax are published,
   then read by real Lmod (Lua and Tcl trees) and Environment Modules 5. Nothing they name runs, every
   module loads, and the text comes out literally in `module help`, `module whatis` and the environment.
2. More rows of the hostile-input table (tests/test_hostile_input.py's site and checks): what modulefiles
   cannot carry is refused at load with file:line, and the store, module tree and profiles stay unchanged.
"""

import json
import os

import pytest

from conftest import run_cli, site_config, write
from modtools import ModuleShell, em5_init  # noqa: F401 (em5_init is a fixture)
from storetools import synthetic
from test_hostile_input import assert_refused_and_unchanged, recipe, site  # noqa: F401 (site is a fixture)

def _hostile(canary):
    """(name, text, tcl_under_lmod): text that must come out literally; the last is False where Lmod's
    Tcl reader cannot carry it (characters beyond U+FFFF, admin_docs/modules.md)."""
    touch = f"touch {canary}/"
    return [
        ("braces", "} puts INJECTED; exec " + touch + "braces {", True),
        ("unbalanced", "{{{ x", True),
        ("brackets", f"[exec {touch}brackets] [list a]", True),
        ("quotes", "say \"hi\" and 'bye' \"", True),
        ("dollar", f"$HOME ${{HOME}} $({touch}dollar) $::env(HOME) $root", True),
        ("backtick", f"`{touch}backtick`", True),
        ("backslashes", "a\\b \\n \\\\ \\{ \\u00e9 \\", True),
        ("semicolon", f"x; {touch}semicolon; y && z || w | v > /dev/null", True),
        ("lua", "]] ]==] ]=] --[[ x ]] \" .. os.execute(\"" + touch + "lua\") .. \"", True),
        ("comment", "# not a comment -- nor this", True),
        ("percent", "%s %d %% {name} {{ x }}", True),
        ("unicode", "é ☃ 日本語 Ωμέγα \u2028 \u00a0 end", True),
        ("astral", "😀 𝔘", False),
    ]


def _as_path(text):
    """``text`` as one path element: no ':' (a separator), '"' or '\\' (refused in paths: Lmod's reader of
    Tcl modulefiles does not escape them)."""
    return text.replace(":", "").replace('"', "").replace("\\", "").strip()   # Lmod trims paths


def _yaml(value):
    """``value`` as YAML flow text (JSON, but characters beyond U+FFFF as themselves: YAML has no
    surrogate escapes; and U+2028/U+2029 escaped: raw, YAML reads them as line breaks)."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inject")
    canary = tmp / "canary"
    canary.mkdir()
    recipes = tmp / "recipes"
    rows = _hostile(canary)
    for i, (name, text, _) in enumerate(rows):
        path = synthetic(recipes, f"evil{i}")
        doc = json.load(open(path))
        doc.update(description=f"{text}\nsecond line {text}", homepage=f"https://example.org/{text}",
                   env={"set": {f"EVIL{i}_VALUE": text}, "append": {f"EVIL{i}_PATH": "{prefix}/" + _as_path(text)}})
        write(path, _yaml(doc))
    header = "\n".join(text for _, text, _ in rows) + "\nends in a backslash \\"
    config = site_config(tmp, {f"evil{i}": None for i in range(len(rows))}, store=tmp / "store", recipes=[recipes],
                         extra=f"modules: {{root: {tmp}/modules, lmod_cache: {tmp}/cache, header: {_yaml(header)}, "
                               f"footer: {_yaml(header)}}}\n")
    run_cli("sync", config)
    prefixes = {}
    for i in range(len(rows)):
        [d] = os.listdir(tmp / "store" / f"evil{i}")
        prefixes[i] = str(tmp / "store" / f"evil{i}" / d)
    return tmp, canary, rows, prefixes


@pytest.mark.parametrize("tool_fmt", [("lmod", "lmod"), ("lmod", "tcl"), ("em5", "tcl")], ids="-".join)
def test_hostile_text_comes_out_literally_and_runs_nothing(injected, tool_fmt, tmp_path, request):
    tmp, canary, rows, prefixes = injected
    tool, tree = tool_fmt
    if tool == "lmod":
        sh = ModuleShell.lmod(f"{tmp}/modules/{tree}", tmp_path)
    else:
        sh = ModuleShell(request.getfixturevalue("em5_init"), f"{tmp}/modules/{tree}", tmp_path)
    # Lmod's reader of Tcl modulefiles writes characters beyond U+FFFF as CESU-8 (not UTF-8): not read there.
    shown = [i for i, row in enumerate(rows) if row[2] or (tool, tree) != ("lmod", "tcl")]
    script = []
    for i in shown:
        script.append(f"echo '<<HELP{i}'; module help evil{i} 2>&1; echo 'HELP{i}>>'\n"
                      f"echo '<<WHATIS{i}'; module whatis evil{i} 2>&1; echo 'WHATIS{i}>>'\n"
                      f"module load evil{i}; snap loaded{i}; module unload evil{i}; snap after{i}")
    r = sh.run("snap before\n" + "\n".join(script))
    assert os.listdir(canary) == [], f"hostile text ran a command: {os.listdir(canary)}"
    out = r.stdout
    for i in shown:
        name, text, _ = rows[i]
        help_text = out.split(f"<<HELP{i}\n")[1].split(f"HELP{i}>>")[0]
        whatis = out.split(f"<<WHATIS{i}\n")[1].split(f"WHATIS{i}>>")[0]
        loaded = r.snaps[f"loaded{i}"]
        assert "error" not in (help_text + whatis).lower(), (name, help_text, whatis)
        assert loaded[f"EVIL{i}_ROOT"] == prefixes[i], name
        assert r.snaps[f"after{i}"].get(f"EVIL{i}_VALUE") is None, name
        assert loaded[f"EVIL{i}_VALUE"] == text, name
        assert loaded[f"EVIL{i}_PATH"] == f"{prefixes[i]}/" + _as_path(text), name
        assert f"{text}\nsecond line {text}\n" in help_text, (name, help_text)
        assert f"Homepage:  https://example.org/{text}\n" in help_text, (name, help_text)
        assert f"Description: {text} second line {text}" in whatis, (name, whatis)
        assert f"URL: https://example.org/{text}" in whatis, (name, whatis)


def test_lmods_spider_cache_of_hostile_text_runs_nothing(injected, tmp_path):
    """Lmod's system spider cache, written by the publish from the same modulefiles, is read as Lua by
    every `module spider` and `module avail`: the text stays data there too."""
    tmp, canary, rows, _ = injected
    assert (tmp / "cache" / "spiderT.lua").is_file()
    (tmp_path / "lmodrc.lua").write_text(
        f'scDescriptT = {{ {{ dir = "{tmp}/cache", timestamp = "{tmp}/cache/timestamp" }} }}\n')
    sh = ModuleShell.lmod(f"{tmp}/modules/lmod", tmp_path, extra_env={"LMOD_RC": str(tmp_path / "lmodrc.lua")})
    r = sh.run("module -t avail 2>&1; " + "; ".join(f"module spider evil{i}/1.0 2>&1" for i in range(len(rows))))
    assert os.listdir(canary) == [], f"hostile text ran a command: {os.listdir(canary)}"
    assert "error" not in r.stdout.lower(), r.stdout
    for i in range(len(rows)):
        assert f"evil{i}/1.0" in r.stdout


# --- refused at load: more rows of the hostile-input table ------------------------------------------

ROWS = {}


def row(fn):
    ROWS[fn.__name__] = fn
    return fn


def _recipe_with(tmp, **fields):
    body = {"name": "alpha", "versions": {"1.0": {"path": "src"}}, "build": "commands", "commands": ["true"],
            **fields}
    recipe(tmp, "alpha", "\n".join(f"{k}: {json.dumps(v)}" for k, v in body.items()) + "\n")


def _override(site, tmp, text):
    """A config extending the site's with ``text`` (its modules: or store: settings merge over the site's)."""
    return write(tmp / "over.yml", f"extends: {site.config(tmp)}\n{text}")


@row
def root_variable_collision(site, tmp):
    synthetic(tmp / "r", "foo-bar")
    synthetic(tmp / "r", "foo_bar")
    return ["sync", site.config(tmp, "alpha: {}, foo-bar: {}, foo_bar: {}", recipes=[tmp / "r"])], \
        ["packages 'foo-bar' and 'foo_bar' would both set FOO_BAR_ROOT", "foo_bar.yml:", "rename one of them"]


@row
def root_variable_collision_through_a_dependency(site, tmp):
    synthetic(tmp / "r", "foo.bar")
    synthetic(tmp / "r", "app", deps=["foo.bar"])
    synthetic(tmp / "r", "foo-bar")
    return ["sync", site.config(tmp, "alpha: {}, app: {}, foo-bar: {}", recipes=[tmp / "r"])], \
        ["would both set FOO_BAR_ROOT"]


@row
def env_value_with_newline(site, tmp):
    _recipe_with(tmp, env={"set": {"GREETING": "hi\necho INJECTED"}})
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], \
        ["alpha.yml:5", "env.set.GREETING: it is one line of text and holds the control character '\\n'"]


@row
def env_value_with_escape_sequence(site, tmp):
    _recipe_with(tmp, env={"prepend": {"SOMEPATH": "{prefix}/\x1b[2Jx"}})
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], ["env.prepend.SOMEPATH", "'\\x1b'"]


@row
def description_ending_lmods_tcl_strings(site, tmp):
    _recipe_with(tmp, description="]===]) os.execute('touch /tmp/x') whatis([===[")
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], \
        ["alpha.yml:5", "description: it holds ']===]', which ends a string where Lmod reads a Tcl modulefile"]


@row
def env_path_with_a_quote(site, tmp):
    _recipe_with(tmp, env={"append": {"SOMEPATH": '{prefix}/x",os.execute("true"),"'}})
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], \
        ["alpha.yml:5", "env.append.SOMEPATH: it is a path and holds '\"', which Lmod does not escape"]


@row
def option_value_ending_lmods_tcl_strings(site, tmp):
    return ["sync", site.config(tmp, 'alpha: {options: {msg: "]===] os.exit(1) [===["}}')], \
        ["option msg: it holds ']===]'"]


@row
def description_with_carriage_return(site, tmp):
    _recipe_with(tmp, description="ok\r-- a Lua comment ends here")
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], \
        ["alpha.yml:5", "description: it may span lines, but holds the control character '\\r'"]


@row
def homepage_with_newline(site, tmp):
    _recipe_with(tmp, homepage="https://example.org/\nputs INJECTED")
    return ["sync", site.config(tmp, recipes=[tmp / "r"])], \
        ["alpha.yml:5", "homepage: it is one line of text and holds the control character '\\n'"]


@row
def modules_header_with_carriage_return(site, tmp):
    return ["sync", _override(site, tmp, 'modules: {header: "site\\ros.execute(\\"true\\")"}\n')], \
        ["over.yml:2", "modules.header: it may span lines, but holds the control character '\\r'"]


@row
def modules_footer_with_nul(site, tmp):
    return ["modules", _override(site, tmp, 'modules: {footer: "a\\0b"}\n')], ["modules.footer", "'\\x00'"]


@row
def modules_root_with_newline(site, tmp):
    return ["sync", _override(site, tmp, 'modules: {root: "/tmp/x\\nputs INJECTED"}\n')], \
        ["over.yml:2", "modules.root: it is one line of text"]


@row
def store_root_with_newline(site, tmp):
    return ["sync", _override(site, tmp, 'store: {root: "/tmp/x\\ny"}\n')], ["store root: it is one line of text"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_text_modulefiles_cannot_carry_is_refused_and_changes_nothing(site, tmp_path, name):
    argv, expected = ROWS[name](site, tmp_path)
    assert_refused_and_unchanged(site, argv, expected)
