"""Build scripts from recipes: arguments are bash words in which $VARS expand and nothing else is
interpreted; option values inserted by templates stay literal."""

import json
import os
import subprocess

import pytest

from sitedist.spec.recipe import load_recipe, render_script

from conftest import write


def words_as_bash_sees_them(tmp_path, args, options=None, option_values=None):
    recipe_file = write(tmp_path / "r" / "pkg.yml", "name: pkg\nversions:\n  '1.0': {path: .}\nbuild: make\n"
                        + "options:\n" + "".join(f"  {k}: {{default: {v!r}}}\n" for k, v in (options or {"x": ""}).items())
                        + "make_args:\n" + "".join(f"  - {json.dumps(a)}\n" for a in args))
    recipe = load_recipe(recipe_file)
    resolved = recipe.resolve_options(option_values or {}, "test")
    script = render_script(recipe, "1.0", resolved)
    marker = tmp_path / "pwned"
    # The first `make` prints the words it was given after -jN and PREFIX=..., then the script stops.
    fake_make = "make() { shift 2; printf '%s\\n' \"$@\"; exit 0; }\n"
    out = subprocess.run(["bash", "-c", fake_make + script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CC": "gcc", "HOME": str(tmp_path), "JOBS": "1"},
                         check=True).stdout
    assert not marker.exists(), "a recipe argument ran a command"
    return out.splitlines()


def test_variables_expand_commands_do_not(tmp_path):
    got = words_as_bash_sees_them(tmp_path, ["CC=$CC", "H=${HOME}", "--plain=$(touch pwned)", "--bq=`touch pwned`",
                                             'quote="x"', "back\\slash", "pid=$$"])
    assert got == ["CC=gcc", f"H={tmp_path}", "--plain=$(touch pwned)", "--bq=`touch pwned`", 'quote="x"',
                   "back\\slash", "pid=$$"]


def test_template_literal_text_and_values_stay_literal(tmp_path):
    got = words_as_bash_sees_them(tmp_path, ['--q="quoted {{ options.flag }}" $(touch pwned)'],
                                  options={"flag": "on"}, option_values={"flag": "$(touch pwned); `id`"})
    assert got == ['--q="quoted $(touch pwned); `id`" $(touch pwned)']


def test_option_value_in_a_commands_line_is_one_literal_word(tmp_path):
    recipe = load_recipe(write(tmp_path / "r" / "pkg.yml", """
        name: pkg
        versions: {"1.0": {path: .}}
        build: commands
        options: {greeting: {default: hi}}
        commands:
          - printf '%s\\n' {{ options.greeting }}
        """))
    script = render_script(recipe, "1.0", recipe.resolve_options({"greeting": "a b; touch pwned"}, "t"))
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out == "a b; touch pwned\n" and not os.path.exists(tmp_path / "pwned")


# --- template values in every bash context (issue 11 item 4) ----------------------------------------

HOSTILE = "x\"; touch pwned; echo \"$(touch pwned)`touch pwned`'; touch pwned; echo '\\ * ${HOME} $'\\'"


def commands_recipe(tmp_path, lines, options=None, key="commands"):
    body = {"name": "pkg", "versions": {"1.0": {"path": "."}}, "build": "commands",
            "options": options or {"v": {"default": "plain"}}, "commands": ["true"]}
    body[key] = lines
    return load_recipe(write(tmp_path / "r" / "pkg.yml", json.dumps(body)))


def run_script(tmp_path, lines, value=HOSTILE, key="commands"):
    """Render a `build: commands` recipe with option v=``value`` and run it: what it wrote to `out`."""
    recipe = commands_recipe(tmp_path, lines, key=key)
    script = render_script(recipe, "1.0", recipe.resolve_options({"v": value}, "t"))
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", "set -euo pipefail\n" + script], cwd=tmp_path,
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
    assert not (tmp_path / "pwned").exists(), f"the option value ran a command:\n{script}"
    assert proc.returncode == 0, proc.stderr + "\n" + script
    return (tmp_path / "out").read_text()


CONTEXTS = {
    "unquoted": (["printf '%s\\n' {{ options.v }} > out"], "{v}\n"),
    "double quotes": (["printf '%s\\n' \"pre {{ options.v }} post\" > out"], "pre {v} post\n"),
    "single quotes": (["printf '%s\\n' 'pre {{ options.v }} post' > out"], "pre {v} post\n"),
    "ansi-c quotes": (["printf '%s\\n' $'pre\\t{{ options.v }}' > out"], "pre\t{v}\n"),
    "assignment": (["X={{ options.v }}", "printf '%s\\n' \"$X\" > out"], "{v}\n"),
    "quoted assignment": (["X=\"a {{ options.v }}\"; printf '%s\\n' \"$X\" > out"], "a {v}\n"),
    "command substitution": (["printf '%s\\n' \"$(printf '%s' {{ options.v }})\" > out"], "{v}\n"),
    "quotes in command substitution in quotes": (
        ["printf '%s\\n' \"a $(printf '%s' \"<{{ options.v }}>\") b\" > out"], "a <{v}> b\n"),
    "backquotes": (["X=`printf '%s' {{ options.v }}`; printf '%s\\n' \"$X\" > out"], "{v}\n"),
    "parameter default": (["printf '%s\\n' \"${UNSET_VAR:-{{ options.v }}}\" > out"], "{v}\n"),
    "parameter default unquoted": (["printf '%s\\n' ${UNSET_VAR:-\"{{ options.v }}\"} > out"], "{v}\n"),
    "comment": (["true # {{ options.v }} \" ' ", "printf 'ok\\n' > out"], "ok\n"),
    "here-document": (["cat > out <<EOF", "a {{ options.v }} b", "\"{{ options.v }}\"", "EOF"],
                      "a {v} b\n\"{v}\"\n"),
    "here-document in one item": (["cat > out <<EOF\n'{{ options.v }}'\nEOF"], "'{v}'\n"),
    "here-document stripping tabs": (["cat > out <<-END", "\t{{ options.v }}", "\tEND"], "{v}\n"),
    "here-string": (["cat > out <<< {{ options.v }}"], "{v}\n"),
    "two values on one line": (["printf '%s|%s\\n' \"{{ options.v }}\" {{ options.v }} > out"], "{v}|{v}\n"),
    "control block": (["printf '%s\\n' \"{% if options.v %}[{{ options.v }}]{% endif %}\" > out"], "[{v}]\n"),
}


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_an_option_value_stays_literal_in_every_bash_context(tmp_path, context):
    lines, expected = CONTEXTS[context]
    assert run_script(tmp_path, lines) == expected.format(v=HOSTILE)


@pytest.mark.parametrize("key", ["pre_build", "post_install"])
def test_pre_build_and_post_install_quote_the_same_way(tmp_path, key):
    assert run_script(tmp_path, ["printf '%s\\n' \"<{{ options.v }}>\" '{{ options.v }}' > out"], key=key) == \
        f"<{HOSTILE}>\n{HOSTILE}\n"


def test_the_script_holds_references_and_the_hash_sees_the_value(tmp_path):
    recipe = commands_recipe(tmp_path, ["printf '%s\\n' \"{{ options.v }}\" > out"])
    a = render_script(recipe, "1.0", recipe.resolve_options({"v": "a"}, "t"))
    b = render_script(recipe, "1.0", recipe.resolve_options({"v": "b"}, "t"))
    assert a != b, "two option values gave one script text: the hash would not tell the builds apart"
    assert a.splitlines() == ["SITEDIST_OPT_V=a", "printf '%s\\n' \"${SITEDIST_OPT_V}\" > out"]


def test_version_and_name_are_references_too(tmp_path):
    recipe = commands_recipe(tmp_path, ["echo \"{{ name }}-{{ version }}\" {{ version }}"])
    script = render_script(recipe, "1.0", recipe.resolve_options({}, "t"))
    assert "SITEDIST_NAME=pkg" in script and "SITEDIST_VERSION=1.0" in script
    assert 'echo "${SITEDIST_NAME}-${SITEDIST_VERSION}" "${SITEDIST_VERSION}"' in script


def test_a_quoted_here_document_refuses_a_value(tmp_path):
    from sitedist.errors import ConfigError

    recipe = commands_recipe(tmp_path, ["cat > out <<'EOF'", "{{ options.v }}", "EOF"])
    with pytest.raises(ConfigError, match=r"quoted here-document \(<<'EOF'\)") as err:
        render_script(recipe, "1.0", recipe.resolve_options({}, "t"))
    assert "pkg.yml:" in str(err.value) and "<<EOF (unquoted)" in str(err.value)


def test_arithmetic_takes_integers_only(tmp_path):
    from sitedist.errors import ConfigError

    body = {"name": "pkg", "versions": {"1.0": {"path": "."}}, "build": "commands",
            "options": {"n": {"default": 2}, "v": {"default": "x"}},
            "commands": ["echo $(( {{ options.n }} + 1 )) > out"]}
    recipe = load_recipe(write(tmp_path / "r" / "pkg.yml", json.dumps(body)))
    script = render_script(recipe, "1.0", recipe.resolve_options({"n": 41}, "t"))
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True)
    assert (tmp_path / "out").read_text() == "42\n"
    body["commands"] = ["echo $(( {{ options.v }} + 1 ))"]
    recipe = load_recipe(write(tmp_path / "r" / "pkg.yml", json.dumps(body)))
    with pytest.raises(ConfigError, match="must be an integer"):
        render_script(recipe, "1.0", recipe.resolve_options({"v": "a[$(touch pwned)]"}, "t"))


def test_empty_values_vanish_from_argument_lists(tmp_path):
    got = words_as_bash_sees_them(tmp_path, ["{{ options.x }}", "--x={{ options.x }}", "a"])
    assert got == ["--x=", "a"]


@pytest.mark.slow
def test_a_real_build_keeps_a_hostile_value_literal_in_every_context(tmp_path):
    """sitedist sync, a real `build: commands` build: the value reaches files written from unquoted,
    double-quoted, single-quoted and here-document contexts of commands, pre_build and post_install,
    byte for byte, and nothing it names runs."""
    from conftest import run_cli

    value = HOSTILE.replace("pwned", str(tmp_path / "pwned"))
    src = tmp_path / "recipes" / "src"
    src.mkdir(parents=True)
    body = {"name": "quoting", "versions": {"1.0": {"path": "src"}}, "build": "commands",
            "options": {"v": {"default": "plain"}},
            "pre_build": ["printf '%s\\n' \"{{ options.v }}\" > pre.txt"],
            "commands": ['mkdir -p "$PREFIX/share"', "cp pre.txt \"$PREFIX/share/\"",
                         "printf '%s\\n' {{ options.v }} > \"$PREFIX/share/unquoted.txt\"",
                         "printf '%s\\n' 'in single {{ options.v }}' > \"$PREFIX/share/single.txt\"",
                         "cat > \"$PREFIX/share/heredoc.txt\" <<EOF", "in heredoc {{ options.v }}", "EOF"],
            "post_install": ["printf '%s\\n' \"in double {{ options.v }}\" > \"$PREFIX/share/post.txt\""]}
    write(tmp_path / "recipes" / "quoting.yml", json.dumps(body))
    cfg = write(tmp_path / "site.yml", f"""
        store: {tmp_path}/store
        recipes: [{tmp_path}/recipes]
        packages:
          quoting: {{options: {{v: {json.dumps(value)}}}}}
        """)
    run_cli("sync", cfg)
    [prefix] = [tmp_path / "store" / "quoting" / d for d in os.listdir(tmp_path / "store" / "quoting")]
    share = prefix / "share"
    assert not (tmp_path / "pwned").exists(), "the option value ran a command"
    assert (share / "pre.txt").read_text() == value + "\n"
    assert (share / "unquoted.txt").read_text() == value + "\n"
    assert (share / "single.txt").read_text() == f"in single {value}\n"
    assert (share / "heredoc.txt").read_text() == f"in heredoc {value}\n"
    assert (share / "post.txt").read_text() == f"in double {value}\n"
