"""Which characters text from a config or recipe may hold where it reaches modulefiles and the shell code
that module tools emit (admin_docs/security.md, "Modulefiles and the shell code modules emit").

No escaping can carry a control character safely everywhere: Lua reads a carriage return as the end of a
comment line, Lmod writes a newline of an environment value into the shell code it emits, where it starts
a new command, and a terminal acts on escape sequences. So they are refused when a file is loaded, with
its file and line; everything else (quotes, braces, brackets, ``$``, backslashes, ``;``, any Unicode
letter) is escaped by the modulefile templates and comes out literally.
"""

import re

from sitedist.errors import ConfigError

# C0 control characters, DEL and the C1 control characters; MULTILINE text (a description, a header) may
# hold newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def control_character(value, multiline=False):
    """The first control character of ``value`` that it may not hold (None when there is none)."""
    if not isinstance(value, str):
        return None
    found = (_CONTROL_MULTILINE if multiline else _CONTROL).search(value)
    return found.group() if found else None


def check_text(value, what, where, multiline=False):
    """Raise ConfigError (at ``where``) when ``value`` holds a control character it may not hold."""
    char = control_character(value, multiline)
    if char is not None:
        allowed = "it may span lines, but holds" if multiline else "it is one line of text and holds"
        raise ConfigError(f"{what}: {allowed} the control character {char!r}, which modulefiles and the "
                          "shell code module tools emit cannot carry as text", where=where,
                          hint="remove it" + ("" if multiline else " (and any line break)"))
