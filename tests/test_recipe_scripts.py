"""Build scripts from recipes: arguments are bash words in which $VARS expand and nothing else is
interpreted; option values inserted by templates stay literal."""

import json
import os
import subprocess

from sitedist.spec.recipe import load_recipe, render_script

from conftest import write


def words_as_bash_sees_them(tmp_path, args, options=None, option_values=None):
    recipe_file = write(tmp_path / "r" / "pkg.yml", "name: pkg\nversions:\n  '1.0': {path: .}\nbuild: make\n"
                        + "options:\n" + "".join(f"  {k}: {{default: {v!r}}}\n" for k, v in (options or {"x": ""}).items())
                        + "make_args:\n" + "".join(f"  - {json.dumps(a)}\n" for a in args))
    recipe = load_recipe(recipe_file)
    resolved = recipe.resolve_options(option_values or {}, "test")
    script = render_script(recipe, "1.0", resolved)
    line = next(line for line in script.splitlines() if line.startswith("make -j"))
    words = line.split('PREFIX="$PREFIX" ', 1)[1]
    marker = tmp_path / "pwned"
    out = subprocess.run(["bash", "-c", f'cd {tmp_path}; printf "%s\\n" {words}'], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "CC": "gcc", "HOME": str(tmp_path)}, check=True).stdout
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
