"""JSON Schemas of the site config and of recipes, and validation with file:line errors.

The schemas are the single statement of which keys exist and what type each has; admin_docs/
site-config.md and admin_docs/recipes.md describe the same keys for people.
"""

import difflib
import re

from sitedist.core.names import NAME, VERSION
from sitedist.errors import ConfigError
from sitedist.spec.marked_yaml import mark_at

# Whole-string patterns: \A and \Z, never ^ and $ ($ also matches before a final newline, and a JSON
# Schema "pattern" is a search). Use them with re.fullmatch or as schema patterns. NAME and VERSION are
# in sitedist.core.names (the store names its directories by them too).
SHA256 = r"\A[0-9a-f]{64}\Z"
COMMIT = r"\A[0-9a-f]{40}\Z"
VARIABLE = r"\A[A-Za-z_][A-Za-z0-9_]*\Z"  # environment variable names
KEYWORD = r"\A[^\x00-\x20\x7f<>]{1,40}\Z"   # a recipe's search word for the catalog page
HELP_URL = r"\A(https?://|mailto:|/|\./)[^\s<>\"']*\Z"   # a link on the catalog page: never javascript:
_CLAUSE = r"\s*(>=|<=|==|!=|>|<)?\s*[0-9][A-Za-z0-9_+.-]*\s*"
CONSTRAINT = rf"\A{_CLAUSE}(,{_CLAUSE})*\Z"  # a tool's version constraint: '>=3.20', '>=3.20,<4', '3.25'
TOOL_SOURCE = r"\A(host|recipe)\Z"
CUDA_ARCH = r"\A[0-9]{2,3}[a-z]?\Z"  # 80, 90, 90a, 100
PY_MODULE = r"\A[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z"  # a dotted Python module name



# <NAME>_ROOT variables that a tool reads with a meaning of its own, so a module or build must never point
# them at a store prefix: Debian's gcc driver relocates its search directories by GCC_ROOT (then it cannot
# find stddef.h); Lmod reads LMOD_ROOT and MODULEPATH_ROOT. And prefixes of variables that tools parse by
# name: Open MPI, PMIx and PRRTE take every OMPI_MCA_*, PMIX_MCA_*, PRTE_MCA_* as a parameter; Lmod and
# Environment Modules read LMOD_* and MODULES_* as settings.
TOOL_ROOT_VARS = frozenset({"GCC_ROOT", "LMOD_ROOT", "MODULEPATH_ROOT"})
TOOL_VAR_PREFIXES = ("OMPI_MCA_", "PMIX_MCA_", "PRTE_MCA_", "LMOD_", "MODULES_")


def root_var(name, kind="package"):
    """The variable that holds an artifact's prefix, in its module and in the builds that depend on it
    (admin_docs/modules.md, "Which <NAME>_ROOT"). For a package built from a recipe: ``<NAME>_ROOT``, the
    name in upper case with anything not a letter, digit or '_' as '_' (CMake's find_package reads
    ``<PackageName>_ROOT``). ``SITEDIST_<NAME>_ROOT`` instead for host compilers and MPIs (their prefix
    is a directory of driver links, not an installation that a vendor variable could describe), for a
    name starting with a digit (not a shell variable name otherwise) and for a variable a tool reads
    (``GCC_ROOT``). Names that map to one variable are refused by ``check_root_vars``."""
    var = re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "_ROOT"
    if kind != "package" or var[0].isdigit() or var in TOOL_ROOT_VARS or var.startswith(TOOL_VAR_PREFIXES):
        return "SITEDIST_" + var
    return var


def check_root_vars(named):
    """Raise ConfigError when two different names of ``named`` ((name, kind, where) triples) would set
    one variable: ``foo-bar``, ``foo.bar`` and ``foo_bar`` all give ``FOO_BAR_ROOT``."""
    seen = {}
    for name, kind, where in named:
        var = root_var(name, kind)
        other = seen.setdefault(var, (name, where))
        if other[0] != name:
            raise ConfigError(f"packages {other[0]!r} and {name!r} would both set {var}, the variable that "
                              f"holds a package's prefix in its module and in builds", where=where or other[1],
                              hint=f"rename one of them (its recipe's name and file), or drop one from the "
                                   f"config; {other[0]!r} is at {other[1] or 'the host probe'}")
    return seen


_strings = {"type": "array", "items": {"type": "string"}}
_str_or_strings = {"anyOf": [{"type": "string"}, _strings]}
_option_value = {"type": ["string", "integer", "boolean"]}  # no floats: hashed documents refuse them

_package = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "version": {"type": ["string", "number"], "pattern": VERSION},
        "options": {"type": "object", "propertyNames": {"pattern": NAME},
                    "additionalProperties": _option_value},
        "toolchains": {"type": "array", "items": {"type": "string", "pattern": NAME}},
        "recipe": {"type": "string", "pattern": NAME},
    },
}

_host_package = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["compiler", "mpi", "tool", "cuda", "python"]},
        "implementation": {"type": "string", "pattern": NAME},
        "version": {"type": ["string", "number"], "pattern": VERSION},
        "prefix": {"type": "string"},
    },
}

SITE_CONFIG = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "extends": _str_or_strings,
        "store": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["root"],
                    "properties": {
                        "root": {"type": "string"},
                        "group": {"type": "string"},
                        "build_dir": {"type": "string"},
                        "keep_failed": {"type": "boolean"},
                        # Build under a store path padded to this length, so that artifacts pushed to
                        # a cache can be relocated into stores with paths up to this long
                        # (admin_docs/caches.md).
                        "padded_length": {"type": "integer", "minimum": 1, "maximum": 4000},
                    },
                },
            ]
        },
        "recipes": _str_or_strings,
        "mirrors": _str_or_strings,
        "upstreams": _str_or_strings,
        # Binary caches consulted by id before building (admin_docs/caches.md): signed by a trusted
        # key, or marked unsigned on purpose.
        "caches": {"type": "array", "items": {"anyOf": [
            {"type": "object", "additionalProperties": False, "required": ["url", "trusted_keys"],
             "properties": {"url": {"type": "string", "minLength": 1},
                            "trusted_keys": {"type": "array", "minItems": 1,
                                             "items": {"type": "string", "minLength": 1}},
                            "signed": {"const": True},
                            "timeout": {"type": "number", "exclusiveMinimum": 0}}},
            {"type": "object", "additionalProperties": False, "required": ["url", "signed"],
             "properties": {"url": {"type": "string", "minLength": 1}, "signed": {"const": False},
                            "timeout": {"type": "number", "exclusiveMinimum": 0}}},
        ]}},
        "jobs": {"type": "integer", "minimum": 1},
        "history": {  # admin_docs/reproducible-stacks.md
            "type": "object",
            "additionalProperties": False,
            "properties": {"keep": {"type": "integer", "minimum": 0}},
        },
        "executor": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {
                "type": {"enum": ["local", "slurm"]},
                "partition": {"type": "string", "minLength": 1},
                "account": {"type": "string", "minLength": 1},
                "qos": {"type": "string", "minLength": 1},
                # Slurm's walltime syntax: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
                "time": {"anyOf": [{"type": "integer", "minimum": 1},
                                   {"type": "string", "pattern": r"\A([0-9]+-)?[0-9]+(:[0-9]+){0,2}\Z"}]},
                "cpus_per_build": {"type": "integer", "minimum": 1},
                "extra_args": _strings,
                "poll": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "target": {"anyOf": [{"type": "string"}, _strings]},
        "packages": {"type": "object", "propertyNames": {"pattern": NAME},
                     "additionalProperties": _package},
        "tools": {"type": "object", "propertyNames": {"pattern": NAME},
                  # 'host', 'recipe' or {recipe: NAME, version: V} (pattern applies to strings only)
                  "additionalProperties": {
                      "type": ["string", "object"], "pattern": TOOL_SOURCE, "additionalProperties": False,
                      "required": ["recipe"], "properties": {"recipe": {"type": "string", "pattern": NAME},
                                                             "version": {"type": ["string", "number"]}}}},
        # The Python of Python packages (admin_docs/python.md): 'host', or a package whose recipe
        # says 'provides: [python]' (e.g. cpython).
        "python": {"type": "string", "pattern": NAME},
        "cuda_arch": {"type": "array", "minItems": 1,
                      "items": {"type": ["integer", "string"], "minimum": 10, "pattern": CUDA_ARCH}},
        "toolchains": {
            "type": "object",
            "propertyNames": {"pattern": NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["compiler"],
                "properties": {"compiler": {"type": "string"}, "mpi": {"type": "string"},
                               "cuda": {"type": "string"}},
            },
        },
        "host": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "compilers": {"anyOf": [{"enum": ["probe", "none"]}, _strings]},
                "mpi": {"anyOf": [{"enum": ["probe", "none"]}, _strings]},
                "paths": _strings,
                "default_compiler": {"type": "string"},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "packages": {"type": "object", "propertyNames": {"pattern": NAME},
                             "additionalProperties": _host_package},
            },
        },
        "modules": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "root": {"type": "string"},
                "formats": {"type": "array", "items": {"enum": ["lua", "tcl"]}},
                "layout": {"enum": ["flat", "hierarchical"]},
                "naming": {"type": "string"},
                "disambiguate": {"type": "array", "items": {"enum": ["toolchain", "options", "hash"]}},
                "defaults": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
                "hide_implicit": {"type": "boolean"},
                "templates": {"type": "string"},
                "header": {"type": "string"},
                "footer": {"type": "string"},
                "keep": {"type": "integer", "minimum": 1},
                "lmod_cache": {"type": "string"},
                "catalog": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "site_name": {"type": "string"},
                        "logo_text": {"type": "string"},
                        "help_url": {"type": "string", "pattern": HELP_URL},
                    },
                },
            },
        },
        "profiles": {
            "type": "object",
            "propertyNames": {"pattern": NAME},
            "additionalProperties": {
                "anyOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["packages"],
                        "properties": {
                            "packages": {"type": "array", "items": {"type": "string"}},
                            "root": {"type": "string"},
                            "conflicts": {"enum": ["error", "prefer"]},
                            "prefer": {"type": "array", "items": {"type": "string"}},
                            "keep": {"type": "integer", "minimum": 1},
                        },
                    },
                ]
            },
        },
    },
}

_source = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string"},
        "sha256": {"type": "string", "pattern": SHA256},
        "filename": {"type": "string"},
        "git": {"type": "string"},
        "commit": {"type": "string", "pattern": COMMIT},
        "path": {"type": "string"},
    },
    "oneOf": [
        {"required": ["sha256"], "anyOf": [{"required": ["url"]}, {"required": ["filename"]}],
         "not": {"anyOf": [{"required": ["git"]}, {"required": ["path"]}]}},
        {"required": ["git", "commit"], "not": {"anyOf": [{"required": ["url"]}, {"required": ["path"]}]}},
        {"required": ["path"], "not": {"anyOf": [{"required": ["url"]}, {"required": ["git"]}]}},
    ],
}

_env_ops = {"type": "object", "additionalProperties": {"type": "string"},
            "propertyNames": {"pattern": VARIABLE}}

RECIPE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "versions", "build"],
    "properties": {
        "name": {"type": "string", "pattern": NAME},
        "description": {"type": "string"},
        "homepage": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string", "pattern": KEYWORD}},
        "versions": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": VERSION},
            "additionalProperties": _source,
        },
        "depends": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: {"type": "array", "items": {"type": "string", "pattern": NAME}}
                           for k in ("build", "link", "run")},
        },
        "build": {"enum": ["autotools", "cmake", "meson", "make", "commands", "python"]},
        # build: python (admin_docs/python.md): the modules imported after install (default: the name
        # without 'py-', '-' as '_'), the backend's config settings (KEY=VALUE, as pip's -C), and
        # build-system requirements the recipe knows the build does not need.
        "import": {"type": "array", "items": {"type": "string", "pattern": PY_MODULE}},
        "config_settings": _strings,
        "ignore_build_requires": {"type": "array", "items": {"type": "string", "pattern": NAME}},
        # What a package provides besides itself: 'python' for a Python interpreter that Python
        # packages can be built with ('python: NAME' in the site config).
        "provides": {"type": "array", "items": {"enum": ["python"]}},
        # NAME or {name: NAME, version: CONSTRAINT} ('pattern' applies to strings, the rest to mappings)
        "tools": {"type": "array", "items": {
            "type": ["string", "object"], "pattern": NAME, "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": NAME},
                           "version": {"type": "string", "pattern": CONSTRAINT}}}},
        "meson_args": _strings,
        "configure_args": _strings,
        "cmake_args": _strings,
        "make_args": _strings,
        "install_args": _strings,
        "commands": _strings,
        "pre_build": _strings,
        "post_install": _strings,
        "parallel": {"type": "boolean"},
        # Roughly how many seconds a build takes: the scheduler's priority (critical path first) until the
        # store's build reports have timed one (admin_docs/recipes.md). Not part of the artifact's id.
        "build_estimate": {"type": "number", "exclusiveMinimum": 0},
        "options": {
            "type": "object",
            "propertyNames": {"pattern": NAME},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["default"],
                "properties": {
                    "default": _option_value,
                    "values": {"type": "array", "items": _option_value},
                    "description": {"type": "string"},
                },
            },
        },
        "patches": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["file"],
                "properties": {"file": {"type": "string"}, "strip": {"type": "integer", "minimum": 0}},
            },
        },
        "env": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"set": _env_ops, "prepend": _env_ops, "append": _env_ops},
        },
        "toolchains": {"type": "array", "items": {"type": "string", "pattern": NAME}},
    },
}

# What users of other tools write for a value of ours (Spack's module formats, build systems' names).
SYNONYMS = {
    "lmod": "lua", "environment-modules": "tcl", "envmodules": "tcl", "tmod": "tcl", "tclmod": "tcl",
    "modules": "tcl", "hierarchy": "hierarchical", "hierarchic": "hierarchical", "lmod-hierarchy": "hierarchical",
    "autoconf": "autotools", "configure": "autotools", "gnu": "autotools", "makefile": "make",
    "script": "commands", "shell": "commands", "bash": "commands", "compiler": "toolchain", "variant": "options",
    "variants": "options",
}


def did_you_mean(value, allowed):
    """A hint for a value that is not one of ``allowed``: its synonym, a close spelling, or the list."""
    text = str(value).strip().lower()
    choices = [str(a) for a in allowed]
    if SYNONYMS.get(text) in choices:
        return f"did you mean '{SYNONYMS[text]}'? ('{value}' is called '{SYNONYMS[text]}' here)"
    close = difflib.get_close_matches(text, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(choices)}"


_validators = {}


def _validator(schema):
    key = id(schema)
    if key not in _validators:
        import jsonschema  # imported here: only files that changed since the last sync are validated

        _validators[key] = jsonschema.Draft7Validator(schema)
    return _validators[key]


def _json_type(value):
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                       (dict, "mapping"), (list, "list")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _describe(error, document, filename):
    path = list(error.absolute_path)
    where = mark_at(document, path) if hasattr(document, "mark") else None
    where = str(where) if where else filename
    dotted = ".".join(str(p) for p in path) or "(top level)"
    validator = error.validator
    hint = None
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        key = extra[0] if extra else "?"
        if extra and isinstance(error.instance, dict) and hasattr(error.instance, "mark_of"):
            where = str(error.instance.mark_of(key))
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed keys here: {', '.join(allowed)}"
        message = f"unknown key '{key}' in {dotted}"
    elif validator == "required":
        message = f"{dotted}: {error.message}"
    elif "propertyNames" in error.schema_path:
        parent = document
        for step in path:
            parent = parent[step]
        if hasattr(parent, "mark_of"):
            where = str(parent.mark_of(error.instance))
        message = f"{dotted}: {error.instance!r} is not an allowed name"
        hint = "names are letters, digits and _ + . - (no '/', no '..', no spaces), at most 64 characters"
    elif validator == "pattern":
        message = f"{dotted}: {error.instance!r} is not an allowed value"
        hint = {SHA256: "a sha256 is 64 lower-case hex digits (sha256sum FILE)",
                NAME: "names are letters, digits and _ + . - (no '/', no '..'), at most 64 characters",
                VERSION: "versions are letters, digits and _ + . ~ - (no '/', no '..')",
                HELP_URL: "an http(s):// or mailto: URL, or a path on the web server starting with / or ./",
                KEYWORD: "a keyword is one word of at most 40 characters: no spaces, control characters, < or >",
                CONSTRAINT: "a version constraint is e.g. '>=3.20', '>=3.20,<4' or '3.25'",
                TOOL_SOURCE: "a tool comes from 'host', 'recipe' or {recipe: NAME, version: V}",
                CUDA_ARCH: "a GPU architecture is its compute capability without the dot: 80, 90, 90a",
                PY_MODULE: "a Python module name, dotted for a submodule: numpy, mpi4py.MPI"
                }.get(error.validator_value)
    elif validator == "enum":
        message = f"{dotted}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
        hint = did_you_mean(error.instance, error.validator_value)
    elif validator in ("anyOf", "oneOf"):
        message = f"{dotted}: {error.instance!r} does not have a valid form"
        best = min(error.context, key=lambda e: len(list(e.absolute_path)), default=None) if error.context else None
        if best is not None:
            hint = best.message
            if best.validator == "enum":
                hint += "; " + did_you_mean(best.instance, best.validator_value)
    elif validator == "type" and error.validator_value == ["string", "integer", "boolean"]:
        message = f"{dotted}: expected a string, integer or boolean, got {_json_type(error.instance)} {error.instance!r}"
        hint = f'write it as a string: "{error.instance}"' if isinstance(error.instance, float) else None
    elif validator == "type":
        message = f"{dotted}: expected {error.validator_value}, got {_json_type(error.instance)} {error.instance!r}"
    else:
        message = f"{dotted}: {error.message}"
    return ConfigError(message, where=where, hint=hint)


def validate(document, schema, filename, what):
    """Raise ConfigError for the first problem in ``document`` (most precise location first)."""
    if not isinstance(document, dict):
        raise ConfigError(f"a {what} must be a YAML mapping of keys to values", where=filename)
    errors = list(_validator(schema).iter_errors(document))
    if not errors:
        return
    errors.sort(key=lambda e: (-len(list(e.absolute_path)), str(e.message)))
    # Prefer the error deepest in the document: it is the most precise line to fix.
    raise _describe(errors[0], document, filename)
