"""Escaping for Lua and Tcl modulefiles (issue 10 point 4: unit tests of the pure functions that
sitedist.modules.render uses), checked by the real interpreters: every text comes back byte for byte
from the literal it is written as, also inside a braced Tcl body (a proc, as ModulesHelp is)."""

import re
import subprocess

import pytest

from sitedist.modules.render import lua_long_string, lua_path, lua_string, tcl_comment, tcl_path, tcl_word

TEXTS = ["plain", "", "a b", "x}; puts INJECTED; proc y {", "{unbalanced", "}", "[exec id]", "$HOME ${x} $",
         "back\\slash\\", "\\", 'say "hi"', "it's", "semi; colon", "line\nbreak\r\n", "tab\tand\x01\x1f\x7f",
         "]]", "]=]", "]==]x[==[", "--[[ comment", "é ✓ ß", "#not a comment", "x" * 130,
         "long {} [] $ \\ " * 12]
TCL_TEXTS = TEXTS
LUA_TEXTS = TEXTS + ["😀 astral"]


def run(argv, script):
    proc = subprocess.run(argv, input=script.encode("utf-8"), capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace") + "\n" + script
    return proc.stdout.decode("utf-8")


def test_lua_strings_round_trip():
    lines = [f"io.write({lua_string(t)}, '\\0')" for t in LUA_TEXTS]
    # Long strings (help text) hold what multi-line text may hold: no control characters but newline and
    # tab (sitedist.spec.text refuses the rest; Lua would read \r\n as \n).
    long = [t for t in LUA_TEXTS if not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", t)] + ["ends in ]", "]", "]="]
    lines += [f"io.write({lua_long_string(t)}, '\\0')" for t in long]
    out = run(["lua5.3", "-"], "\n".join(lines) + "\n").split("\0")[:-1]
    assert out == LUA_TEXTS + long


def test_lua_paths_join_the_root():
    values = ["{prefix}/bin", "/opt/{prefix}", "no prefix", "{prefix}", 'q"{prefix}"\n']
    lines = ['local root = "/R"'] + [f"io.write({lua_path(v)}, '\\0')" for v in values]
    out = run(["lua5.3", "-"], "\n".join(lines) + "\n").split("\0")[:-1]
    assert out == [v.replace("{prefix}", "/R") for v in values]


TCL_HEAD = "fconfigure stdout -encoding utf-8 -translation lf\n"


def test_tcl_words_round_trip_also_inside_a_braced_body():
    words = "\n".join(f"    puts -nonewline {tcl_word(t, indent=8)}; puts -nonewline \\0" for t in TCL_TEXTS)
    script = TCL_HEAD + "proc p {} {\n" + words + "\n}\np\n"
    assert run(["tclsh"], script).split("\0")[:-1] == TCL_TEXTS
    flat = "\n".join(f"puts -nonewline {tcl_word(t)}; puts -nonewline \\0" for t in TCL_TEXTS)
    assert run(["tclsh"], TCL_HEAD + flat + "\n").split("\0")[:-1] == TCL_TEXTS


def test_tcl_paths_join_the_root():
    values = ["{prefix}/bin", "/opt/{prefix}", "no prefix", "{prefix}", 'q"{prefix}"$x[y]{z}\n' + "w" * 60]
    script = TCL_HEAD + "set root /R\n" + "".join(f"puts -nonewline {tcl_path(v)}; puts -nonewline \\0\n"
                                                 for v in values)
    assert run(["tclsh"], script).split("\0")[:-1] == [v.replace("{prefix}", "/R") for v in values]


@pytest.mark.parametrize("text", ["ends in a backslash \\", "two \\\\", "plain"])
def test_a_tcl_comment_never_swallows_the_next_line(text):
    script = TCL_HEAD + f"set x ok\n# {tcl_comment(text)}\nset x reached\nputs -nonewline $x\n"
    assert run(["tclsh"], script) == "reached"


def test_short_safe_words_stay_bare():
    assert tcl_word("zlib/1.2.13") == "zlib/1.2.13"
    assert tcl_word("a b") == '"a b"' and tcl_word("") == '""'
    assert lua_string("plain") == '"plain"'
