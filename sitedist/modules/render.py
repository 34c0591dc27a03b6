"""Rendering modulefiles from the Jinja2 templates in ``modulefiles_templates/`` (or a site's overrides).

A site's ``modules.templates`` directory overrides any template by file name; its templates can extend the
built-in ones as ``builtin/<name>`` and override their blocks. Every file's content is a function of its
context (a plain dict, documented in admin_docs/modules.md) and the templates' digest: publishing names a
module name's directory by a digest of what makes its contexts (sitedist.modules.publish) and renders only
the directories no kept generation has.
"""

import hashlib
import importlib.resources
import os
import re
import stat
from pathlib import Path

import jinja2

from sitedist.errors import ModulesError
from sitedist.spec.schema import root_var
from sitedist.spec.text import problem

# The shipped templates: package data (sitedist/templates, which is modulefiles_templates/ of the
# source tree), read through importlib.resources wherever and however sitedist is installed.
BUILTIN_TEMPLATES = importlib.resources.files("sitedist") / "templates"


# format -> (tree directory under the root, modulefile extension, rc file name)
FORMATS = {"lua": ("lmod", ".lua", ".modulerc.lua"), "tcl": ("tcl", "", ".modulerc")}

# Standard subdirectories of a prefix and the variable each is prepended to (never LD_LIBRARY_PATH:
# artifacts find their libraries by RPATH).
SUBDIR_VARS = (
    ("sbin", "PATH"), ("bin", "PATH"),
    ("man", "MANPATH"), ("share/man", "MANPATH"),
    ("info", "INFOPATH"), ("share/info", "INFOPATH"),
    ("lib/pkgconfig", "PKG_CONFIG_PATH"), ("lib64/pkgconfig", "PKG_CONFIG_PATH"),
    ("share/pkgconfig", "PKG_CONFIG_PATH"),
    ("share/aclocal", "ACLOCAL_PATH"),
    ("lib/perl5", "PERL5LIB"),
)
_PYTHON_SITE = re.compile(r"\Alib(64)?/python\d+\.\d+/site-packages\Z")
# A package prefix with any of these is a CMake search prefix (CMake looks in <prefix>/lib/cmake etc.).
_CMAKE_HINTS = {"include", "lib", "lib64", "lib/cmake", "lib64/cmake", "share/cmake"}


_LUA_ESCAPES = str.maketrans({**{chr(c): "\\%03d" % c for c in (*range(32), 127)},
                              "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})
# In Tcl, braces count even inside a double-quoted word when the word is in a braced body (a proc, an if):
# an unescaped '}' in ModulesHelp's text would end the proc. Backslash-escaped, they are plain text anywhere.
_TCL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "[": "\\[", "]": "\\]", "{": "\\{",
                              "}": "\\}", "\n": "\\n", "\r": "\\r"})
_LUA_SPECIAL = re.compile(r'[\x00-\x1f\x7f\\"]')
_TCL_SPECIAL = re.compile(r'[\\"$\[\]{}\n\r]|[^\x00-\x7f]')
# Non-ASCII as \uXXXX (UTF-16 units): Tcl then reads it the same whatever encoding it reads the file in
# (Lmod's Tcl reader takes files as Latin-1). Characters beyond U+FFFF, as surrogate pairs, come out right
# in Environment Modules, not in Lmod reading the Tcl tree (admin_docs/modules.md).
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_TCL_BARE = re.compile(r"[A-Za-z0-9_./:+@%=,-]+")
_TCL_CHUNK = 48   # characters of a string per line: generated Tcl stays within tclint's line length
# The pieces a long Tcl word is split into, never inside an escape or ${root}.
_TCL_TOKENS = re.compile(r"\$\{root\}|\\u[0-9a-f]{4}|\\.|[^\\]", re.S)


def lua_string(text):
    """A double-quoted Lua string literal."""
    text = str(text)
    return '"' + (text.translate(_LUA_ESCAPES) if _LUA_SPECIAL.search(text) else text) + '"'


def lua_long_string(text):
    """A Lua long string ``[==[...]==]`` with a level its content does not close."""
    text = str(text)
    level = 0
    while (text + f"]{'=' * level}]").find(f"]{'=' * level}]") != len(text):  # also a text ending in ']'
        level += 1
    return f"[{'=' * level}[\n{text}]{'=' * level}]"


def _utf16_escape(match):
    units = match.group().encode("utf-16-be")
    return "".join("\\u%02x%02x" % (units[i], units[i + 1]) for i in range(0, len(units), 2))


def _tcl_escape(text):
    text = str(text)
    if not _TCL_SPECIAL.search(text):
        return text
    return _NON_ASCII.sub(_utf16_escape, text.translate(_TCL_ESCAPES))


def _tcl_quoted(escaped, indent):
    """A double-quoted Tcl word of ``escaped``; a long one becomes ``[join [list "..." \\ "..."] ""]`` over
    several lines."""
    if len(escaped) <= _TCL_CHUNK:
        return f'"{escaped}"'
    if "\\" not in escaped and "$" not in escaped:   # one character a token: 44 a line
        chunks = [escaped[i:i + 44] for i in range(0, len(escaped), 44)]
    else:
        chunks = [""]
        for token in _TCL_TOKENS.findall(escaped):   # up to 44 characters a line
            if len(chunks[-1]) + len(token) > 44:
                chunks.append("")
            chunks[-1] += token
    sep = '" \\\n' + " " * indent + '"'
    return '[join [list "' + sep.join(chunks) + '"] ""]'


def tcl_word(text, indent=4):
    """One Tcl word: bare when short and of safe characters only, else double-quoted (over several lines
    when long; ``indent`` is where continuation lines start)."""
    text = str(text)
    if text and len(text) <= _TCL_CHUNK and _TCL_BARE.fullmatch(text):
        return text
    return _tcl_quoted(_tcl_escape(text), indent)


def tcl_comment(text):
    """``text`` for the rest of a Tcl comment line: a trailing backslash would continue the comment onto
    the next line (swallowing it), so one gets a space after it."""
    text = str(text)
    return text + " " if text.endswith("\\") else text


def lua_path(value):
    """A Lua expression for ``value`` where '{prefix}' is the modulefile's ``root`` variable."""
    terms = []
    for i, part in enumerate(str(value).split("{prefix}")):
        if i:
            terms.append("root")
        if part:
            terms.append(lua_string(part))
    return " .. ".join(terms) or '""'


def tcl_path(value, indent=4):
    """A Tcl word for ``value`` where '{prefix}' is the modulefile's ``$root`` variable."""
    return _tcl_quoted("${root}".join(_tcl_escape(p) for p in str(value).split("{prefix}")), indent)


def prefix_env(entry):
    """The (op, VAR, value) prepends that the prefix's subdirectories call for."""
    present = set(entry.subdirs)
    ops = [("prepend", var, "{prefix}/" + sub) for sub, var in SUBDIR_VARS if sub in present]
    # Python packages: the prefix goes into SITEDIST_PYTHONPREFIXES, which only the Python they were built
    # with reads (its site-packages hook), never PYTHONPATH, which every Python reads (admin_docs/python.md).
    python = entry.kind == "package" and any(_PYTHON_SITE.match(sub) for sub in present)
    if python:
        ops.append(("prepend", "SITEDIST_PYTHONPREFIXES", "{prefix}"))
    # (a pure Python package's lib/ holds only lib/pythonX.Y: nothing for CMake)
    if entry.kind == "package" and present & _CMAKE_HINTS and not (python and present & _CMAKE_HINTS == {"lib"}):
        ops.append(("prepend", "CMAKE_PREFIX_PATH", "{prefix}"))
    return tuple(ops)


def _check_text(ctx):
    """Refuse text in a module's context that no modulefile can carry (sitedist.spec.text: control
    characters; what Lmod's reader of Tcl modulefiles does not escape). Configs and recipes are checked
    at load with their file:line; this guards what reaches the templates by any other way."""
    def visit(key, value, path=False):
        if isinstance(value, str):
            why = problem(value, multiline=key in ("description", "header", "footer"), path=path)
            if why is not None:
                raise ModulesError(f"module {ctx['fullname']}: its {key} {value!r}: {why}; change it in the "
                                   "recipe or config")
        elif isinstance(value, (tuple, list)):
            for item in value:
                visit(key, item)

    if problem(" ".join(_strings(ctx.values())), path=True) is None:   # the strictest rule, on all at once
        return ctx
    for key, value in ctx.items():
        if key == "env":
            for op, var, text in value:
                visit(f"env {var}", text, path=op != "set")
        else:
            visit(key, value, path=key in ("prefix", "use"))
    return ctx


def _strings(values):
    """Every string in ``values`` and in the tuples and lists in them."""
    out = []
    for value in values:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, (tuple, list)):
            out += _strings(value)
    return out


def module_context(m, tree_root, header=(), footer=()):
    """The template context of planned module ``m`` in the tree published at ``tree_root``."""
    e = m.entry
    env = prefix_env(e) + tuple(e.env)
    return _check_text({
        "name": m.name, "version": m.version, "fullname": m.fullname,
        "package": e.name, "package_version": e.version, "kind": e.kind, "family": m.family,
        "description": e.description, "homepage": e.homepage, "artifact_id": e.artifact_id,
        "prefix": e.prefix, "toolchain": e.toolchain,
        "compiler": " ".join(e.compiler) if e.compiler else "", "mpi": " ".join(e.mpi) if e.mpi else "",
        "options": tuple(e.options), "root_var": root_var(e.name, e.kind),
        "env": env,
        # MANPATH values it adds: when MANPATH was unset, the module keeps an empty element in it, so that
        # man still searches the system's manuals (see the templates).
        "man_dirs": tuple(value for op, var, value in env if var == "MANPATH" and op != "set"),
        "depends": m.depends, "requires": m.requires,
        "use": f"{tree_root}/{m.opens}" if m.opens else "",
        "header": tuple(header), "footer": tuple(footer),
    })


def _files(directory, rel=""):
    """[(relative path, content)] of the files under ``directory`` (a Path or a package resource)."""
    out = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        name = f"{rel}{entry.name}"
        if entry.is_dir():
            out += _files(entry, name + "/")
        elif entry.is_file():
            out.append((name, entry.read_bytes()))
    return out


class Renderer:
    """The templates of one publish: the built-in ones, overridden by a site's directory."""

    def __init__(self, site_dir=None):
        if not BUILTIN_TEMPLATES.is_dir():
            raise ModulesError(f"the built-in modulefile templates are missing ({BUILTIN_TEMPLATES}); "
                               "reinstall sitedist")
        dirs = [BUILTIN_TEMPLATES]
        builtin = jinja2.PackageLoader("sitedist", "templates")
        loaders = [jinja2.PrefixLoader({"builtin": builtin}), builtin]
        if site_dir:
            if not os.path.isdir(site_dir):
                raise ModulesError(f"modules.templates: {site_dir} is not a directory")
            dirs.insert(0, Path(site_dir))
            loaders.insert(0, jinja2.FileSystemLoader(str(site_dir)))
        self.env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                      autoescape=False)
        self.env.filters.update(lua=lua_string, lua_long=lua_long_string, lua_path=lua_path,
                                tcl=tcl_word, tcl_path=tcl_path, tcl_comment=tcl_comment)
        digest = hashlib.sha256()
        for d in dirs:
            for rel, data in _files(d):
                digest.update(f"{rel}\0".encode() + data + b"\0")
        self.digest = digest.hexdigest()
        self._compiled = {}

    def keep_compiled(self, directory):
        """Keep compiled templates in ``directory`` between runs (Jinja2's bytecode cache, each checked
        against its template's source): a directory only the publisher writes to, made if missing. Compiling
        the five templates anew costs more than a publish after one change writes."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        # Compiled templates are code: kept only in a directory of this user's that nobody else may write
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022:
            self.env.bytecode_cache = jinja2.FileSystemBytecodeCache(directory)

    def render(self, template, ctx):
        compiled = self._compiled.get(template)
        if compiled is None:
            try:
                compiled = self._compiled[template] = self.env.get_template(template)
            except jinja2.TemplateError as err:
                raise ModulesError(f"modulefile template {template}: {err}") from None
        try:
            return compiled.render(ctx)
        except jinja2.TemplateError as err:
            raise ModulesError(f"modulefile template {template} fails for {ctx.get('fullname', ctx)}: {err}") \
                from None
