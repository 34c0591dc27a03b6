"""YAML loading (issue 11 item 11): big plain documents load, alias bombs do not, syntax errors name
the line that opened what is left open, and enum values get a did-you-mean with synonyms."""

import pytest

from sitedist.errors import ConfigError
from sitedist.spec.marked_yaml import MAX_VALUES, load_text
from sitedist.spec.schema import RECIPE, SITE_CONFIG, did_you_mean, validate


def error(text, name="s.yml"):
    with pytest.raises(ConfigError) as err:
        load_text(text, name)
    return str(err.value)


def test_a_large_plain_document_loads():
    """More values than the alias limit, none through an alias: the text is the size."""
    text = "commands:\n" + "  - true\n" * (MAX_VALUES + 10)
    assert len(load_text(text, "big.yml")["commands"]) == MAX_VALUES + 10


def test_an_alias_bomb_is_refused_with_what_it_expands_to():
    lines = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    msg = error("\n".join(lines) + "\n", "bomb.yml")
    assert msg.startswith(f"bomb.yml: the document expands to more than {MAX_VALUES} values through YAML aliases")
    assert "&name / *name" in msg


def test_a_few_aliases_are_fine():
    doc = load_text("base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: *b\n", "s.yml")
    assert doc["one"] == doc["two"] == {"x": 1, "y": [1, 2]}


@pytest.mark.parametrize("text, opened, noticed, closer", [
    ("packages:\n  zlib: {version: '1.2.13'\n  libpng: {}\njobs: 4\n", 2, 3, "'}'"),
    ("jobs: 4\nrecipes: [a, b\nmirrors: [c]\n", 2, 3, "']'"),
    ("jobs: 4\n\nrecipes:\n  - [a, b\n  - c\n\nstore: /x\n", 4, 7, "']'"),
    ("jobs: 4\nstore: \"/x\nrecipes: [a]\nmirrors: [b]\n", 2, 5, "the closing quote"),
])
def test_a_syntax_error_names_the_line_that_opened_it(text, opened, noticed, closer):
    msg = error(text)
    assert msg.startswith(f"s.yml:{opened}: YAML syntax error: the ")
    assert f"opened at line {opened} is not closed" in msg and f"at line {noticed})" in msg
    assert f"hint: add {closer}" in msg


def test_other_syntax_errors_name_their_line():
    assert error("jobs: 4\na: b: c\n").startswith("s.yml:2: YAML syntax error: mapping values are not allowed")
    assert "YAML tags are not allowed" in error("jobs: !!python/object/apply:os.system [id]\n")


@pytest.mark.parametrize("text, schema, expected", [
    ("modules: {formats: [lmod]}\n", SITE_CONFIG, "did you mean 'lua'? ('lmod' is called 'lua' here)"),
    ("modules: {formats: [lua, environment-modules]}\n", SITE_CONFIG, "did you mean 'tcl'?"),
    ("modules: {formats: [Lua]}\n", SITE_CONFIG, "did you mean 'lua'?"),
    ("modules: {layout: hierarchy}\n", SITE_CONFIG, "did you mean 'hierarchical'?"),
    ("modules: {disambiguate: [compiler]}\n", SITE_CONFIG, "did you mean 'toolchain'?"),
    ("host: {compilers: prob}\n", SITE_CONFIG, "did you mean 'probe'?"),
    ("name: x\nversions: {'1': {path: .}}\nbuild: autoconf\n", RECIPE, "did you mean 'autotools'?"),
    ("modules: {formats: [xyz]}\n", SITE_CONFIG, "use one of: lua, tcl"),
])
def test_enum_values_get_a_did_you_mean(text, schema, expected):
    with pytest.raises(ConfigError) as err:
        validate(load_text(text, "s.yml"), schema, "s.yml", "document")
    assert expected in str(err.value) and str(err.value).startswith("s.yml:")


def test_did_you_mean():
    assert did_you_mean("lmod", ["lua", "tcl"]).startswith("did you mean 'lua'?")
    assert did_you_mean("tmod", ["lua", "tcl"]).startswith("did you mean 'tcl'?")
    assert did_you_mean("qqq", ["lua", "tcl"]) == "use one of: lua, tcl"
