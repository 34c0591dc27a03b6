"""Recipes: how to build one package (``<recipe dir>/<name>.yml``).

A recipe names its versions (each with its source), its dependencies, a build style and the
arguments of that style, options with defaults, patches, and the environment its module sets.
:func:`render_script` turns a recipe, a version and resolved options into the exact bash that the
builder runs; that text is what the hash covers ("hash what actually runs").
"""

import functools
import importlib.resources
import os
import re
import shlex
from dataclasses import dataclass, field

from sitedist.core.versions import newest
from sitedist.errors import ConfigError
from sitedist.spec import shell
from sitedist.spec.doc_cache import DocCache
from sitedist.spec.marked_yaml import mark_at
from sitedist.spec.schema import RECIPE, did_you_mean
from sitedist.spec.text import check_text


@dataclass
class Recipe:
    name: str
    path: str
    description: str = ""
    homepage: str = ""
    keywords: tuple = ()      # words the catalog page's search finds the package by
    versions: dict = field(default_factory=dict)
    depends: dict = field(default_factory=dict)
    build: str = "autotools"
    args: dict = field(default_factory=dict)  # configure_args, cmake_args, make_args, install_args, commands, ...
    options: dict = field(default_factory=dict)
    patches: list = field(default_factory=list)  # [(absolute path, strip)]
    env: dict = field(default_factory=dict)
    parallel: bool = True
    build_estimate: float = None   # seconds, for the scheduler's order before the store has timed a build
    raw: dict = None
    tools: list = field(default_factory=list)  # [(name, version constraint or None)] named by the recipe
    imports: tuple = ()        # build: python: the modules imported after install (admin_docs/python.md)
    ignore_build_requires: tuple = ()   # build: python: build-system requirements the build does not need
    provides: tuple = ()       # ('python',) for a Python interpreter Python packages can be built with

    def required_tools(self):
        """{tool: [(constraint, where)]}: the tools the build style implies, then those the recipe names."""
        out = {name: [] for name in STYLE_TOOLS[self.build]}
        for i, (name, constraint) in enumerate(self.tools):
            out.setdefault(name, [])
            if constraint is not None:
                out[name].append((constraint, self.where("tools", i)))
        return out

    @functools.cached_property
    def newest(self):
        return newest(self.versions)

    def where(self, *path):
        return str(mark_at(self.raw, path) or self.path)

    def all_depends(self):
        seen = []
        for kind in ("build", "link", "run"):
            for name in self.depends.get(kind, []):
                if name not in seen:
                    seen.append(name)
        return seen

    def resolve_options(self, given, where):
        """Defaults overridden by ``given``; unknown options and disallowed values are errors."""
        resolved = {k: v["default"] for k, v in self.options.items()}
        for key, value in given.items():
            if key not in self.options:
                known = ", ".join(sorted(self.options)) or "none"
                raise ConfigError(f"package {self.name}: unknown option '{key}' (recipe {self.path} has: {known})",
                                  where=where)
            spec = self.options[key]
            allowed = spec.get("values")
            if allowed is not None and value not in allowed:
                raise ConfigError(f"package {self.name}: option {key}={value!r} is not one of {allowed}",
                                  where=where, hint=did_you_mean(value, allowed))
            if type(value) is not type(spec["default"]) and not (
                    isinstance(value, (int, float)) and isinstance(spec["default"], (int, float))
                    and not isinstance(value, bool)):
                raise ConfigError(f"package {self.name}: option {key} takes a "
                                  f"{type(spec['default']).__name__}, got {value!r}", where=where)
            if isinstance(value, str) and ("\0" in value or "\n" in value):
                raise ConfigError(f"package {self.name}: option {key} contains a NUL or newline", where=where)
            check_text(value, f"package {self.name}: option {key}", where)   # its module's help shows it
            resolved[key] = value
        return resolved


ARG_KEYS = ("configure_args", "cmake_args", "meson_args", "make_args", "install_args", "commands", "pre_build",
            "post_install", "config_settings")
# The tools each build style runs (besides the compilers and the base system): they are inputs of the
# build like the compiler, found on the host or built from recipes (admin_docs/build-tools.md).
STYLE_TOOLS = {"autotools": ("make",), "make": ("make",), "cmake": ("cmake", "make"),
               "meson": ("meson", "ninja"), "commands": (), "python": ()}


def load_recipe(path, expected_name=None, cache=None):
    doc = (cache or DocCache()).load(path, RECIPE, "recipe")
    if not isinstance(doc, dict):
        raise ConfigError("a recipe must be a YAML mapping", where=path)
    name = doc["name"]
    if expected_name and name != expected_name:
        raise ConfigError(f"recipe file is named {expected_name}.yml but says name: {name}",
                          where=str(doc.mark_of("name")), hint=f"rename the file to {name}.yml or fix 'name'")
    base = os.path.dirname(os.path.abspath(path))
    versions = {}
    for version, source in doc["versions"].items():
        source = dict(source)
        if "path" in source:
            source["path"] = os.path.normpath(os.path.join(base, os.path.expanduser(source["path"])))
        versions[str(version)] = source
    patches = []
    for i, patch in enumerate(doc.get("patches", [])):
        file = os.path.normpath(os.path.join(base, patch["file"]))
        if not os.path.isfile(file):
            raise ConfigError(f"patch file not found: {file}", where=str(doc["patches"].mark_of(i)),
                              hint="patch paths are relative to the recipe file")
        patches.append((file, patch.get("strip", 1)))
    _check_module_text(doc)
    build = doc["build"]
    if build == "commands" and not doc.get("commands"):
        raise ConfigError("build: commands needs a 'commands' list of bash lines",
                          where=str(doc.mark_of("build")))
    for key in ("import", "config_settings", "ignore_build_requires"):
        if key in doc and build != "python":
            raise ConfigError(f"'{key}' is a setting of the python build style, and this recipe has build: {build}",
                              where=str(doc.mark_of(key)), hint="remove it, or use 'build: python'")
    recipe = Recipe(
        name=name,
        path=os.path.abspath(path),
        description=doc.get("description", ""),
        homepage=doc.get("homepage", ""),
        keywords=tuple(doc.get("keywords") or ()),
        versions=versions,
        depends={k: list(v) for k, v in (doc.get("depends") or {}).items()},
        build=build,
        args={k: list(doc[k]) for k in ARG_KEYS if k in doc},
        options={k: dict(v) for k, v in (doc.get("options") or {}).items()},
        patches=patches,
        env={k: dict(v) for k, v in (doc.get("env") or {}).items()},
        parallel=doc.get("parallel", True),
        build_estimate=doc.get("build_estimate"),
        raw=doc,
        tools=[(t, None) if isinstance(t, str) else (t["name"], t.get("version"))
               for t in doc.get("tools") or []],
        imports=tuple(doc["import"]) if "import" in doc else default_imports(name),
        ignore_build_requires=tuple(doc.get("ignore_build_requires") or ()),
        provides=tuple(doc.get("provides") or ()),
    )
    for key, spec in recipe.options.items():
        if spec.get("values") is not None and spec["default"] not in spec["values"]:
            raise ConfigError(f"option {key}: default {spec['default']!r} is not one of its values",
                              where=recipe.where("options", key))
    return recipe


def default_imports(name):
    """The module a Python package is checked to import when its recipe names none: Spack's naming,
    py-flit-core -> flit_core."""
    module = re.sub(r"\Apy-", "", name).replace("-", "_").replace(".", "_")
    return (module,) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module) else ()


def _check_module_text(doc):
    """The recipe's text that its modulefiles carry: no control characters (a description may span lines)."""
    for key in ("description", "homepage"):
        if key in doc:
            check_text(doc[key], key, str(mark_at(doc, [key])), multiline=key == "description")
    for op, variables in (doc.get("env") or {}).items():
        for var, value in (variables or {}).items():
            check_text(value, f"env.{op}.{var}", str(mark_at(doc, ["env", op, var])), path=op != "set")


class RecipeIndex:
    """Finds recipes by name in the config's recipe directories, first match wins."""

    def __init__(self, dirs, doc_cache=None):
        self.dirs = list(dirs)
        self.doc_cache = doc_cache
        self._cache = {}

    def find(self, name):
        for d in self.dirs:
            candidate = os.path.join(d, name + ".yml")
            if os.path.isfile(candidate):
                return candidate
        return None

    def available(self):
        names = set()
        for d in self.dirs:
            if os.path.isdir(d):
                names.update(f[:-4] for f in os.listdir(d) if f.endswith(".yml"))
        return sorted(names)

    def loaded(self):
        """The recipes loaded so far."""
        return list(self._cache.values())

    def load(self, name, where):
        if name in self._cache:
            return self._cache[name]
        path = self.find(name)
        if path is None:
            import difflib

            close = difflib.get_close_matches(name, self.available(), n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                f"add {name}.yml to one of the recipe directories: {', '.join(self.dirs) or '(none configured)'}")
            raise ConfigError(f"no recipe for package '{name}'", where=where, hint=hint)
        recipe = load_recipe(path, expected_name=name, cache=self.doc_cache)
        self._cache[name] = recipe
        return recipe


# --- build scripts -------------------------------------------------------------------------------
# Recipe text is bash; template values ({{ options.x }}, {{ version }}, {{ name }}) are data. A value
# never enters the script as text: it is assigned to a variable at the top of the script (a
# single-quoted word) and the template inserts a reference to that variable, written for the quoting
# context it lands in (sitedist.spec.shell). The hashed script still contains every value.

_envs = {}


def _template_env():
    if "env" not in _envs:
        import jinja2.sandbox

        _envs["env"] = jinja2.sandbox.SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    return _envs["env"]


def _text(value):
    return "true" if value is True else "false" if value is False else str(value)


class _Values:
    """The template values of one script: variable name -> text, named after the option they come
    from when they equal one (SITEDIST_OPT_<NAME>), else SITEDIST_VERSION, SITEDIST_NAME or
    SITEDIST_VALUE."""

    def __init__(self, context):
        self.context = context
        self.names = {}     # text -> variable
        self.values = {}    # variable -> text

    def _preferred(self, text):
        for key in sorted(self.context["options"]):
            if _text(self.context["options"][key]) == text:
                return "SITEDIST_OPT_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())
        if text == self.context["version"]:
            return "SITEDIST_VERSION"
        if text == self.context["name"]:
            return "SITEDIST_NAME"
        return "SITEDIST_VALUE"

    def finalize(self, value, skip_empty):
        text = _text(value)
        if text == "" and skip_empty:
            return ""
        if text not in self.names:
            base = name = self._preferred(text)
            suffix = 1
            while name in self.values:
                suffix += 1
                name = f"{base}_{suffix}"
            self.names[text] = name
            self.values[name] = text
        return shell.placeholder(self.names[text])


def _render(recipe, key, index, text, values, skip_empty):
    import jinja2

    template = _template_env().overlay(finalize=lambda v: values.finalize(v, skip_empty))
    try:
        return template.from_string(text).render(**values.context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{key}[{index}]: cannot expand {text!r}: {exc}",
                          where=recipe.where(key, index)) from None


def _dq_literal(text):
    """Escape recipe text for a double-quoted bash word: $VAR and ${VAR} still expand; nothing else is
    interpreted ($(...), backquotes, quotes and backslashes stay literal)."""
    return re.sub(r'[\\"`]|\$(?![A-Za-z_{])', lambda m: "\\" + m.group(0), text)


def _escape_template_text(text):
    """Escape the literal parts of a template (not its {{ }} and {% %} parts) with _dq_literal."""
    return "".join(_dq_literal(value) if kind == "data" else value
                   for _, kind, value in _template_env().lex(text))


def _checked(recipe, key, index, text):
    if "\0" in text or shell.has_placeholder_chars(text):
        raise ConfigError(f"{key}[{index}] contains a NUL or a private-use character (U+E000/U+E001)",
                          where=recipe.where(key, index))
    return text


def _words(recipe, key, values):
    """An argument list as bash words: recipe text may use $VARS; template values stay literal."""
    return " ".join(_word_list(recipe, key, values))


def _lines(recipe, key, values):
    """The lines of ``key`` (bash) with references to the template values, for where they land."""
    lines = []
    for i, line in enumerate(recipe.args.get(key, [])):
        line = _checked(recipe, key, i, line)
        if "{{" in line or "{%" in line:
            line = _render(recipe, key, i, line, values, skip_empty=False)
        lines.append(line)
    if not lines:
        return []
    return [shell.place_references("\n".join(lines), values.values, where=recipe.where(key))]


def render_script(recipe, version, options):
    """The bash commands that build and install ``recipe`` at ``version``, run in the source dir:
    assignments of the template values, then the build commands."""
    values = _Values({"options": options, "version": version, "name": recipe.name})
    w = lambda key: _words(recipe, key, values)  # noqa: E731
    jobs = '-j"$JOBS"' if recipe.parallel else "-j1"
    body = _lines(recipe, "pre_build", values)
    generated = []
    if recipe.build == "autotools":
        generated = [f'./configure --prefix="$PREFIX" {w("configure_args")}'.rstrip(),
                     f'make {jobs} {w("make_args")}'.rstrip(),
                     f'make install {w("install_args")}'.rstrip()]
    elif recipe.build == "cmake":
        generated = [f'cmake -S . -B _sitedist_build -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_BUILD_TYPE=Release '
                     f'-DCMAKE_INSTALL_RPATH="$SITEDIST_RPATH" -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON '
                     f'{w("cmake_args")}'.rstrip(),
                     f'cmake --build _sitedist_build {jobs}',
                     'cmake --install _sitedist_build']
    elif recipe.build == "meson":
        generated = [f'meson setup _sitedist_build --prefix="$PREFIX" --libdir=lib --buildtype=release '
                     f'{w("meson_args")}'.rstrip(),
                     f'meson compile -C _sitedist_build {jobs}',
                     'meson install -C _sitedist_build']
    elif recipe.build == "make":
        generated = [f'make {jobs} PREFIX="$PREFIX" {w("make_args")}'.rstrip(),
                     f'make install PREFIX="$PREFIX" {w("install_args")}'.rstrip()]
    elif recipe.build == "python":
        frontend = '"$SITEDIST_PYTHON" "$SITEDIST_BUILD_DIR/sitedist_pep517.py"'
        generated = [" ".join([f'{frontend} build --prefix "$PREFIX"']
                              + [f"--ignore {shlex.quote(r)}" for r in recipe.ignore_build_requires]
                              + [f"-C {word}" for word in _word_list(recipe, "config_settings", values)])]
    else:
        body += _lines(recipe, "commands", values)
    body += [shell.place_references(line, values.values, where=recipe.path) for line in generated]
    body += _lines(recipe, "post_install", values)
    if recipe.build == "python":
        # sitedist's PEP 517 frontend, written into the build directory: its text is part of the hashed
        # script, so a change to it gives Python packages new ids (and nothing else).
        body = [f"cat > \"$SITEDIST_BUILD_DIR/sitedist_pep517.py\" <<'{FRONTEND_EOF}'\n{python_frontend()}"
                f"{FRONTEND_EOF}"] + body
        body.append(" ".join([f'{frontend} check-import --prefix "$PREFIX"']
                             + [shlex.quote(m) for m in recipe.imports]))
    return "\n".join(shell.assignments(values.values) + body) + "\n"


FRONTEND_EOF = "SITEDIST_PEP517_FRONTEND"


@functools.lru_cache(maxsize=1)
def python_frontend():
    """The text of sitedist's PEP 517 frontend (spec/python_frontend.py), ending with a newline."""
    text = importlib.resources.files("sitedist.spec").joinpath("python_frontend.py").read_text("utf-8")
    assert FRONTEND_EOF not in text
    return text if text.endswith("\n") else text + "\n"


def _word_list(recipe, key, values):
    """Each argument of ``key`` as one double-quoted bash word; an empty value gives none."""
    out = []
    for i, arg in enumerate(recipe.args.get(key, [])):
        arg = _checked(recipe, key, i, arg)
        if "{{" in arg or "{%" in arg:
            arg = _render(recipe, key, i, _escape_template_text(arg), values, skip_empty=True)
        else:
            arg = _dq_literal(arg)
        if arg:
            out.append(f'"{arg}"')
    return out
