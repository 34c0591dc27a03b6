"""Which characters text from a config or recipe may hold where it reaches modulefiles and the shell code
that module tools emit (admin_docs/security.md, "Modulefiles and the shell code modules emit").

No escaping can carry a control character safely everywhere: Lua reads a carriage return as the end of a
comment line, Lmod writes a newline of an environment value into the shell code it emits, where it starts
a new command, and a terminal acts on escape sequences. Lmod reads Tcl modulefiles by translating them to
Lua (Lmod 8.6, tcl2lua.tcl), and pastes text into that Lua without escaping: help and whatis text between
``[===[`` and ``]===]``, the values of ``prepend-path`` and ``append-path`` between double quotes. So those
are refused when a file is loaded, with its file and line; everything else (quotes, braces, brackets,
``$``, backslashes, ``;``, any Unicode letter) is escaped by the modulefile templates and comes out
literally.
"""

import re

from sitedist.errors import ConfigError

# C0 control characters, DEL and the C1 control characters; MULTILINE text (a description, a header) may
# hold newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
LMOD_TCL_STRING_END = "]===]"    # ends the Lua long strings Lmod puts Tcl help and whatis text in
_PATH_QUOTE = re.compile(r'["\\]')   # end or escape the Lua strings Lmod puts Tcl path values in


def problem(value, multiline=False, path=False):
    """Why ``value`` cannot be carried into a modulefile (None when it can). ``multiline``: it may hold
    newlines and tabs (a description); ``path``: it becomes a path element (a prefix, a prepend)."""
    if not isinstance(value, str):
        return None
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    if found:
        allowed = "it may span lines, but holds" if multiline else "it is one line of text and holds"
        return (f"{allowed} the control character {found.group()!r}, which modulefiles and the shell code "
                "module tools emit cannot carry as text")
    if LMOD_TCL_STRING_END in value:
        return f"it holds {LMOD_TCL_STRING_END!r}, which ends a string where Lmod reads a Tcl modulefile"
    found = _PATH_QUOTE.search(value) if path else None
    if found:
        return (f"it is a path and holds {found.group()!r}, which Lmod does not escape where it reads a Tcl "
                "modulefile's paths")
    return None


def check_text(value, what, where, multiline=False, path=False):
    """Raise ConfigError (at ``where``) when ``value`` cannot be carried into a modulefile."""
    why = problem(value, multiline, path)
    if why is not None:
        raise ConfigError(f"{what}: {why}", where=where, hint="remove it")
