"""Names, versions and variable names are validated as whole strings (issue 11 item 6): a pattern
anchored with ^...$ also accepts a trailing newline ($ matches before it, and a JSON Schema "pattern"
is a search), so "1.0\\n" would pass and make an artifact that verify skips and Lmod cannot load."""

import io
import os
import re
import tokenize

import pytest

from sitedist.spec import schema
from sitedist.spec.schema import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = {
    "NAME": ["zlib", "7zip", "foo-bar", "foo.bar", "foo_bar", "g++", "A" * 64],
    "VERSION": ["1.2.13", "1.2.13.dfsg", "2.0rc1", "1.14.0-beta", "2024.05", "5.4.1a", "1.0~rc1", "1.0+git"],
    "SHA256": ["0" * 64, "ab" * 32],
    "COMMIT": ["0" * 40],
    "VARIABLE": ["PATH", "_x", "FOO_BAR9"],
}
BAD = {
    "NAME": ["", "../x", "/etc", "a b", ".hidden", "-x", "a/b", "A" * 65, "al\0pha"],
    "VERSION": ["", "../1", "/1", "1 0", ".1", "1/0"],
    "SHA256": ["0" * 63, "A" * 64, "0" * 65],
    "COMMIT": ["0" * 39, "g" * 40],
    "VARIABLE": ["", "9X", "A-B", "A B", "A=B"],
}


@pytest.mark.parametrize("pattern", sorted(GOOD))
def test_patterns_take_whole_strings_only(pattern):
    regex = getattr(schema, pattern)
    for text in GOOD[pattern]:
        assert re.fullmatch(regex, text) and re.search(regex, text), text
        for tail in ("\n", "\r", " ", "\n\n", "\nx"):
            assert not re.search(regex, text + tail), f"{pattern} accepts {text + tail!r}"
            assert not re.search(regex, tail.lstrip("\n") + text + tail), f"{pattern} accepts {text + tail!r}"
    for text in BAD[pattern]:
        assert not re.search(regex, text), f"{pattern} accepts {text!r}"


def recipe(**over):
    doc = {"name": "pkg", "versions": {"1.0": {"path": "."}}, "build": "commands", "commands": ["true"]}
    doc.update(over)
    return doc


@pytest.mark.parametrize("doc", [
    recipe(name="pkg\n"),
    recipe(versions={"1.0\n": {"path": "."}}),
    recipe(versions={"1.0": {"url": "x", "sha256": "0" * 64 + "\n"}}),
    recipe(versions={"1.0": {"git": "x", "commit": "0" * 40 + "\n"}}),
    recipe(depends={"link": ["zlib\n"]}),
    recipe(options={"x\n": {"default": 1}}),
    recipe(env={"set": {"X\n": "1"}}),
    recipe(env={"prepend": {"PATH\n": "{prefix}/bin"}}),
    recipe(toolchains=["gcc\n"]),
], ids=lambda d: repr({k: v for k, v in d.items() if k not in ("build", "commands")})[:60])
def test_the_recipe_schema_refuses_a_trailing_newline(doc):
    from sitedist.errors import ConfigError

    validate(recipe(), schema.RECIPE, "r.yml", "recipe")
    with pytest.raises(ConfigError, match=r"\\n"):
        validate(doc, schema.RECIPE, "r.yml", "recipe")


@pytest.mark.parametrize("doc", [
    {"packages": {"zlib\n": {}}},
    {"packages": {"zlib": {"version": "1.0\n"}}},
    {"packages": {"zlib": {"options": {"x\n": 1}}}},
    {"packages": {"zlib": {"toolchains": ["gcc\n"]}}},
    {"packages": {"zlib": {"recipe": "zlib\n"}}},
    {"toolchains": {"tc\n": {"compiler": "gcc"}}},
    {"host": {"packages": {"gcc\n": {}}}},
    {"host": {"packages": {"gcc": {"version": "12\n"}}}},
    {"host": {"packages": {"gcc": {"implementation": "gcc\n"}}}},
    {"profiles": {"default\n": ["zlib"]}},
], ids=repr)
def test_the_config_schema_refuses_a_trailing_newline(doc):
    from sitedist.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\\n"):
        validate(doc, schema.SITE_CONFIG, "site.yml", "site config")


def test_other_whole_name_patterns():
    from sitedist.host import probe
    from sitedist.modules import plan, render
    from sitedist.ops import verify

    assert plan._COMPONENT.fullmatch("zlib") and not plan._COMPONENT.fullmatch("zlib\n")
    assert render._PYTHON_SITE.match("lib/python3.11/site-packages")
    assert not render._PYTHON_SITE.match("lib/python3.11/site-packages\n")
    assert probe._DRIVER_RE.match("gcc-12") and not probe._DRIVER_RE.match("gcc-12\n")
    assert probe._WRAPPER_RE.match("mpicc") and not probe._WRAPPER_RE.match("mpicc\n")
    assert verify._TEMP.search("x.part-12") and not verify._TEMP.search("x.part-12\n")
    from sitedist.modules import catalog
    assert catalog._URL.match("https://zlib.net") and not catalog._URL.match("https://zlib.net\n")


def test_no_pattern_in_sitedist_ends_in_a_dollar():
    """A regular expression ending in $ accepts a trailing newline: use \\Z (or re.fullmatch)."""
    found = []
    for dirpath, _, files in os.walk(os.path.join(REPO, "sitedist")):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                for tok in tokenize.generate_tokens(io.StringIO(f.read()).readline):
                    if tok.type == tokenize.STRING and tok.string[:1] in "rR" and \
                            re.search(r"(?<!\\)\$\)*(\||['\"]+\Z)", tok.string):
                        found.append(f"{os.path.relpath(path, REPO)}:{tok.start[0]}: {tok.string}")
    assert not found, "patterns ending in $:\n" + "\n".join(found)
