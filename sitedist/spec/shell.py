"""Where a value lands in a bash script, and the reference that keeps it data there.

A build script's template values (``{{ options.x }}``, ``{{ version }}``...) never enter the script as
text. The template inserts a placeholder; :func:`place_references` reads the rendered script as bash
would (quotes, ``$(...)``, backquotes, ``${...}``, ``$((...))``, comments and here-documents) and
replaces each placeholder with a reference to a shell variable written for that context:

=============================  ==================  =============================================
context                        inserted            why
=============================  ==================  =============================================
unquoted (and in ``$(...)``)   ``"${V}"``          one word, no splitting, no globbing
inside ``"..."``               ``${V}``            the quotes already hold it together
inside ``'...'``               ``'"${V}"'``        closes the single quotes around the reference
inside ``$'...'``              ``'"${V}"$'``       the same for ANSI-C quotes
here-document (``<<EOF``)      ``${V}``            expanded once, never re-read as code
quoted here-doc (``<<'EOF'``)  refused             nothing expands there
arithmetic ``$((...))``        ``${V}``            only for integers (bash evaluates the text)
=============================  ==================  =============================================

Bash never parses the result of a parameter expansion as code, so a value (``x"; rm -rf ~; echo "``)
stays one literal string in every context. The variables are assigned at the top of the script with
single-quoted words (:func:`assignments`), so the hashed script text still contains every value.
"""

import re
import shlex

from sitedist.errors import ConfigError

# A placeholder: private-use characters, which recipe text cannot usefully contain (refused below).
OPEN, CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{OPEN}([^{CLOSE}]*){CLOSE}")


def placeholder(name):
    return f"{OPEN}{name}{CLOSE}"


def has_placeholder_chars(text):
    return OPEN in text or CLOSE in text


def assignments(values):
    """``NAME='value'`` lines for ``values`` (name -> text), in order."""
    return [f"{name}={shlex.quote(text)}" for name, text in values.items()]


_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|\\?([^\s;&|<>()'\"\ue000\ue001]+))")


def place_references(script, values, where=None):
    """Replace every placeholder in ``script`` with a reference to its variable (see the table).
    ``values`` maps variable names to their text (arithmetic contexts need integers)."""
    out = []
    stack = ["N"]          # N: unquoted; DQ, SQ, ANSI, BQ (backquotes), CMD ($(...)), PARAM (${...}), ARITH
    depth = [0]            # parentheses open inside each CMD/ARITH level
    heredocs = []          # pending here-documents of the current line: (delimiter, quoted, strip tabs)
    i, n = 0, len(script)
    at_word_start = True

    def reference(name):
        top = stack[-1]
        if top == "PARAM":
            top = next((s for s in reversed(stack) if s != "PARAM"), "N")
        if top == "DQ":
            return "${%s}" % name
        if top == "SQ":
            return "'\"${%s}\"'" % name
        if top == "ANSI":
            return "'\"${%s}\"$'" % name
        if top == "ARITH":
            if not re.fullmatch(r"-?[0-9]+", values[name]):
                raise ConfigError(f"a template value used in arithmetic ($((...))) must be an integer, got "
                                  f"{values[name]!r}: bash evaluates the text of arithmetic as code", where=where)
            return "${%s}" % name
        return '"${%s}"' % name

    while i < n:
        c = script[i]
        top = stack[-1]
        if c == OPEN:
            end = script.index(CLOSE, i)
            out.append(reference(script[i + 1:end]))
            i = end + 1
            at_word_start = False
            continue
        two = script[i:i + 2]
        if top == "SQ":
            if c == "'":
                stack.pop()
            out.append(c)
            i += 1
            continue
        if top == "ANSI":
            if c == "\\":
                out.append(script[i:i + 2])
                i += 2
                continue
            if c == "'":
                stack.pop()
            out.append(c)
            i += 1
            continue
        if c == "\\":
            out.append(script[i:i + 2])
            i += 2
            at_word_start = False
            continue
        if script.startswith("$((", i) and top != "SQ":
            stack.append("ARITH")
            depth.append(0)
            out.append("$((")
            i += 3
            continue
        if two == "$(":
            stack.append("CMD")
            depth.append(0)
            out.append(two)
            i += 2
            at_word_start = True
            continue
        if two == "${":
            stack.append("PARAM")
            out.append(two)
            i += 2
            continue
        if c == "`":
            if top == "BQ":
                stack.pop()
            else:
                stack.append("BQ")
                at_word_start = True
            out.append(c)
            i += 1
            continue
        if top == "ARITH":
            if c == "(":
                depth[-1] += 1
            elif c == ")":
                if depth[-1] == 0 and script.startswith("))", i):
                    stack.pop()
                    depth.pop()
                    out.append("))")
                    i += 2
                    continue
                depth[-1] -= 1
            out.append(c)
            i += 1
            continue
        if top == "DQ":
            if c == '"':
                stack.pop()
            out.append(c)
            i += 1
            continue
        if top == "PARAM" and c == "}":
            stack.pop()
            out.append(c)
            i += 1
            continue
        # Unquoted text: at the top level, in $(...), in backquotes or in ${...}.
        if c == '"':
            stack.append("DQ")
        elif two == "$'":
            stack.append("ANSI")
            out.append(two)
            i += 2
            continue
        elif c == "'":
            stack.append("SQ")
        elif c == "#" and at_word_start:
            end = script.find("\n", i)
            end = n if end < 0 else end
            out.append(_PLACEHOLDER.sub(lambda m: "${%s}" % m.group(1), script[i:end]))
            i = end
            continue
        elif top == "CMD" and c == "(":
            depth[-1] += 1
        elif top == "CMD" and c == ")":
            if depth[-1] == 0:
                stack.pop()
                depth.pop()
            else:
                depth[-1] -= 1
        elif script.startswith("<<<", i):  # a here-string: one word, as unquoted text
            out.append("<<<")
            i += 3
            at_word_start = True
            continue
        elif two == "<<":
            m = _HEREDOC.match(script, i)
            if m and not (m.group(4) or "").isdigit():  # (( x << 2 )) shifts
                delim = m.group(2) if m.group(2) is not None else m.group(3) if m.group(3) is not None \
                    else m.group(4)
                quoted = m.group(4) is None or script[m.start(4) - 1] == "\\"
                heredocs.append((delim, quoted, m.group(1) == "-"))
                out.append(m.group(0))
                i = m.end()
                at_word_start = False
                continue
        elif c == "\n" and heredocs:
            out.append(c)
            i += 1
            for delim, quoted, strip in heredocs:
                while i < n:
                    end = script.find("\n", i)
                    end = n if end < 0 else end
                    line = script[i:end]
                    if (line.lstrip("\t") if strip else line) == delim:
                        out.append(line)
                        i = end
                        if i < n:
                            out.append("\n")
                            i += 1
                        break
                    if quoted and _PLACEHOLDER.search(line):
                        raise ConfigError(f"a template value cannot be used in a quoted here-document "
                                          f"(<<'{delim}'), where nothing expands", where=where,
                                          hint=f"write the here-document as <<{delim} (unquoted): the value is "
                                               "then inserted as a variable reference, never as code")
                    out.append(line if quoted else _PLACEHOLDER.sub(lambda m: "${%s}" % m.group(1), line))
                    out.append(script[end:end + 1])
                    i = end + 1
            heredocs = []
            at_word_start = True
            continue
        out.append(c)
        at_word_start = c in " \t\n;&|()"
        i += 1
    return "".join(out)
