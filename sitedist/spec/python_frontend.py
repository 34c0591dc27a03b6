# sitedist's PEP 517 build frontend for `build: python` recipes (admin_docs/python.md). sitedist writes
# this file into the build directory and the build script runs it with the Python the package is built
# for, in the unpacked source:
#   build --prefix P [--ignore NAME]... [-C KEY=VALUE]...   build a wheel with the project's backend
#                                                             and install it into P
#   check-import --prefix P MODULE...                         import MODULE with P and its run dependencies
# No pip, no network, no user site-packages: the backend and every build requirement must be installed
# already (the recipe's dependencies, found through SITEDIST_PYTHONPREFIXES). A failure sitedist can
# explain is written to $SITEDIST_BUILD_DIR/diagnosis (one message, shown instead of the log's tail);
# the whole output stays in the build log. Standard library only.

import base64
import compileall
import csv
import hashlib
import importlib
import importlib.metadata
import io
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile

PYVER = "python%d.%d" % sys.version_info[:2]


class Failure(SystemExit):
    """A failure explained by fail(): passes through the handlers around the backend's hooks."""


def fail(message, status=3):
    print(f"sitedist: {message}", file=sys.stderr, flush=True)
    path = os.path.join(os.environ.get("SITEDIST_BUILD_DIR", "."), "diagnosis")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(message)
    except OSError:
        pass
    raise Failure(status)


def site_dir(prefix):
    return os.path.join(prefix, "lib", PYVER, "site-packages")


# --- pyproject.toml and requirements -------------------------------------------------------------

def read_build_system():
    """(requires, backend, backend_path) of the project in the current directory (PEP 517/518)."""
    if not os.path.exists("pyproject.toml"):
        return ["setuptools>=40.8.0"], "setuptools.build_meta:__legacy__", []
    try:
        import tomllib
    except ImportError:
        fail(f"reading pyproject.toml needs Python 3.11 or newer (tomllib); this is {sys.version.split()[0]}")
    with open("pyproject.toml", "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            fail(f"pyproject.toml of the source is not valid TOML: {exc}")
    system = data.get("build-system") or {}
    if "build-backend" not in system:
        return system.get("requires", ["setuptools>=40.8.0"]), "setuptools.build_meta:__legacy__", []
    return system.get("requires", []), system["build-backend"], system.get("backend-path", [])


_MARKER_TOKEN = re.compile(r"\s*(?:(\()|(\))|(and\b|or\b)|(not\s+in\b|in\b|===|==|!=|<=|>=|~=|<|>)|"
                           r"'([^']*)'|\"([^\"]*)\"|([A-Za-z_][A-Za-z0-9_.]*))")


def _marker_env():
    import platform

    return {"python_version": "%d.%d" % sys.version_info[:2], "python_full_version": platform.python_version(),
            "os_name": os.name, "sys_platform": sys.platform, "platform_system": platform.system(),
            "platform_machine": platform.machine(), "platform_release": platform.release(),
            "implementation_name": sys.implementation.name,
            "platform_python_implementation": platform.python_implementation(),
            "implementation_version": platform.python_version(), "extra": ""}


def version_tuple(text):
    parts = []
    for piece in str(text).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def _compare(left, op, right):
    if op in ("in", "not in"):
        return (left in right) == (op == "in")
    a, b = version_tuple(left), version_tuple(right)
    if not a or not b or op == "===":
        a, b = left, right
    else:
        width = max(len(a), len(b))
        a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
            "~=": a >= b, "===": a == b}[op]


def marker_holds(marker):
    """Evaluate a PEP 508 environment marker; True when it cannot be read (the requirement is kept)."""
    env, tokens, pos = _marker_env(), [], 0
    while pos < len(marker.strip()):
        m = _MARKER_TOKEN.match(marker, pos)
        if not m or m.end() == pos:
            return True
        pos = m.end()
        tokens.append(m)
    if pos < len(marker.rstrip()):
        return True

    def value(m):
        if m.group(5) is not None or m.group(6) is not None:
            return m.group(5) if m.group(5) is not None else m.group(6)
        return env.get(m.group(7), m.group(7))

    def expr(i):
        left, i = term(i)
        while i < len(tokens) and tokens[i].group(3) == "or":
            right, i = term(i + 1)
            left = left or right
        return left, i

    def term(i):
        left, i = atom(i)
        while i < len(tokens) and tokens[i].group(3) == "and":
            right, i = atom(i + 1)
            left = left and right
        return left, i

    def atom(i):
        if tokens[i].group(1):
            result, i = expr(i + 1)
            return result, i + 1
        op = re.sub(r"\s+", " ", tokens[i + 1].group(4))
        return _compare(value(tokens[i]), op, value(tokens[i + 2])), i + 3

    try:
        return expr(0)[0]
    except (IndexError, TypeError, KeyError):
        return True


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def check_requirements(requires, ignore, what):
    """Every requirement (PEP 508) that applies here must be installed: the recipe's dependencies provide
    them. A missing one stops the build with a message naming it; a version outside the requirement's
    range is reported in the log (pip with --no-build-isolation does not check at all)."""
    ignore = {canonical(n) for n in ignore}
    missing = []
    for text in requires:
        req, _, marker = text.partition(";")
        if marker.strip() and not marker_holds(marker.strip()):
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)", req)
        if not m:
            continue
        name, spec = m.group(1), m.group(3).strip().strip("()")
        if canonical(name) in ignore:
            print(f"sitedist: {what} requires {text.strip()!r}: ignored (the recipe's ignore_build_requires)")
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text.strip())
            continue
        for clause in filter(None, (c.strip() for c in spec.split(","))):
            cm = re.match(r"(===|==|!=|<=|>=|~=|<|>)\s*(\S+)", clause)
            if not cm:
                continue
            op, want = cm.groups()
            ok = (installed.startswith(want[:-2]) == (op == "==")) if want.endswith(".*") else \
                _compare(installed, op, want)
            if not ok:
                print(f"sitedist: warning: {what} requires {text.strip()!r}, and {name} {installed} is installed")
    if missing:
        names = ", ".join(repr(canonical(re.match(r"\s*([A-Za-z0-9._-]+)", t).group(1))) for t in missing)
        fail(f"missing build dependency: {what} requires {', '.join(missing)}, which no dependency of the recipe "
             f"provides (Python distribution {names} is not installed). Add the recipe that provides it "
             f"(py-<name>) to the recipe's 'depends: build:', or list it under 'ignore_build_requires:' if "
             f"the build does not need it")


def missing_module(exc):
    """The top-level module of a ModuleNotFoundError anywhere in an exception's chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


# --- building --------------------------------------------------------------------------------------

def load_backend(spec, backend_path):
    for path in reversed(backend_path):
        sys.path.insert(0, os.path.abspath(path))
    module, _, attr = spec.partition(":")
    try:
        backend = importlib.import_module(module)
    except Exception as exc:
        traceback.print_exc()
        name = missing_module(exc)
        if name:
            fail(f"missing build dependency: the build backend {spec} cannot be imported: no module named "
                 f"{name!r}. Add the recipe that provides it (e.g. py-{canonical(name)}) to the recipe's "
                 f"'depends: build:'")
        fail(f"the build backend {spec} cannot be imported: {type(exc).__name__}: {exc}")
    for part in filter(None, attr.split(".")):
        backend = getattr(backend, part)
    return backend


def no_headers():
    """After a failed build: a Python without its C headers cannot build extension modules; say so."""
    import sysconfig

    include = sysconfig.get_paths().get("include", "")
    if include and not os.path.exists(os.path.join(include, "Python.h")):
        fail(f"the build failed, and this Python has no C headers ({include}/Python.h is missing), which building "
             f"extension modules needs: install them (Debian: apt-get install python3-dev) or build with a Python "
             f"that has them ('python: cpython')", status=1)


def config_settings(pairs):
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"config setting {pair!r} is not KEY=VALUE")
        if key in settings:
            settings[key] = (settings[key] if isinstance(settings[key], list) else [settings[key]]) + [value]
        else:
            settings[key] = value
    return settings


def build(prefix, ignore, settings):
    requires, spec, backend_path = read_build_system()
    print(f"sitedist: build backend {spec}; build-system requires {requires}", flush=True)
    check_requirements(requires, ignore, "pyproject.toml's build-system")
    backend = load_backend(spec, backend_path)
    try:
        if hasattr(backend, "get_requires_for_build_wheel"):
            check_requirements(backend.get_requires_for_build_wheel(settings), ignore,
                               f"the backend {spec} (get_requires_for_build_wheel)")
        outdir = tempfile.mkdtemp(prefix="wheel-", dir=os.environ.get("TMPDIR"))
        name = backend.build_wheel(outdir, settings)
    except SystemExit as exc:
        if isinstance(exc, Failure) or exc.code in (0, None):
            raise
        traceback.print_exc()
        no_headers()
        fail(f"the build backend {spec} failed (exit status {exc.code}); see the log above", status=1)
    except Exception as exc:
        traceback.print_exc()
        no_headers()
        name = missing_module(exc)
        if name:
            fail(f"missing build dependency: the build (backend {spec}) imports {name!r}, which no dependency "
                 f"of the recipe provides. Add the recipe that provides it (e.g. py-{canonical(name)}) to the "
                 f"recipe's 'depends: build:' (or 'depends: run:' if the package needs it when it runs too)")
        fail(f"the build backend {spec} failed: {type(exc).__name__}: {exc}", status=1)
    install(os.path.join(outdir, name), prefix)


# --- installing a wheel --------------------------------------------------------------------------

SCRIPT = """{shebang}
# generated by sitedist from the entry point {name} = {value}
import sys
import site
for _dir in {sites!r}:
    site.addsitedir(_dir)
from {module} import {head}
if __name__ == "__main__":
    sys.exit({call}())
"""


def shebang():
    """The first line(s) of a script run by this Python: a plain #! line, or, where the path is too long
    for the kernel (or has a space), the /bin/sh trick pip uses."""
    python = os.environ.get("SITEDIST_PYTHON") or sys.executable
    if len(python) < 120 and " " not in python:
        return f"#!{python}"
    return f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''"


def _safe(member):
    parts = member.split("/")
    if member.startswith("/") or "\\" in member or any(p in ("..", ".", "") for p in parts):
        fail(f"the wheel has a member with an unsafe path: {member!r}")
    return parts


def install(wheel, prefix):
    site = site_dir(prefix)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = {n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")}
        if len(info) != 1:
            fail(f"{os.path.basename(wheel)}: not a wheel (no single .dist-info/WHEEL)")
        dist_info = info.pop()
        dist = dist_info[:-len(".dist-info")].split("-")[0]
        data = dist_info[:-len(".dist-info")] + ".data"
        scheme = {"purelib": site, "platlib": site, "scripts": os.path.join(prefix, "bin"),
                  "headers": os.path.join(prefix, "include", PYVER, dist), "data": prefix}
        installed = []
        for member in z.infolist():
            if member.is_dir():
                continue
            parts = _safe(member.filename)
            if parts[0] == data:
                if len(parts) < 3 or parts[1] not in scheme:
                    fail(f"the wheel has a member in an unknown .data directory: {member.filename!r}")
                dest, kind = os.path.join(scheme[parts[1]], *parts[2:]), parts[1]
            else:
                dest, kind = os.path.join(site, *parts), "lib"
            content = z.read(member)
            mode = (member.external_attr >> 16) & 0o777
            if kind == "scripts" and content.startswith(b"#!python"):
                content = shebang().encode() + b"\n" + (content.split(b"\n", 1)[1] if b"\n" in content else b"")
                mode |= 0o755
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as f:
                f.write(content)
            os.chmod(dest, 0o755 if mode & 0o111 else 0o644)
            installed.append(dest)
        installed += entry_point_scripts(z, dist_info, prefix)
    installer = os.path.join(site, dist_info, "INSTALLER")
    with open(installer, "w", encoding="utf-8") as f:
        f.write("sitedist\n")
    installed.append(installer)
    compile_tree(site)
    write_record(site, dist_info, installed)
    print(f"sitedist: installed {os.path.basename(wheel)} into {prefix}", flush=True)


def entry_point_scripts(z, dist_info, prefix):
    """A script in PREFIX/bin for each console and GUI entry point: it adds its package's site-packages and
    its run dependencies' to the path, so it runs without a module loaded."""
    try:
        text = z.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    except KeyError:
        return []
    import configparser

    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    parser.read_string(text)
    sites = [site_dir(prefix)] + [site_dir(p) for p in
                                  os.environ.get("SITEDIST_RUN_PYTHONPREFIXES", "").split(os.pathsep) if p]
    out = []
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for name, value in parser.items(section):
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name.startswith("."):
                fail(f"entry point {name!r}: not a script name")
            m = re.fullmatch(r"\s*([\w.]+)\s*(?::\s*([\w.]+))?\s*(\[.*\])?\s*", value)
            if not m:
                fail(f"entry point {name} = {value!r}: not MODULE:ATTRIBUTE")
            module, attr = m.group(1), m.group(2)
            head = attr.split(".")[0] if attr else None
            dest = os.path.join(prefix, "bin", name)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as f:
                if head:
                    f.write(SCRIPT.format(shebang=shebang(), name=name, value=value.strip(),
                                          sites=[s for s in sites if os.path.isdir(s)], module=module,
                                          head=head, call=attr))
                else:
                    f.write(SCRIPT.format(shebang=shebang(), name=name, value=value.strip(),
                                          sites=[s for s in sites if os.path.isdir(s)], module="runpy",
                                          head="run_module", call=f"lambda: run_module({module!r}, "
                                                                  f"run_name='__main__')"))
            os.chmod(dest, 0o755)
            out.append(dest)
    return out


def compile_tree(site):
    """Byte-compile what was installed: artifacts are read-only, so Python could never cache it later.
    Unchecked hash-based .pyc files: valid whatever the files' times (the sources never change)."""
    compileall.compile_dir(site, quiet=2, workers=1,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def write_record(site, dist_info, installed):
    record = os.path.join(site, dist_info, "RECORD")
    rows = []
    for path in sorted(set(installed)):
        if path == record:
            continue
        with open(path, "rb") as f:
            data = f.read()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append([os.path.relpath(path, site), f"sha256={digest}", str(len(data))])
    rows.append([os.path.relpath(record, site), "", ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with open(record, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())


# --- the import check --------------------------------------------------------------------------------

CHECK = r"""
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        print("MISSING", name, exc.name or "", sep="\t")
        raise
    print("imported", name, "from", getattr(sys.modules[name], "__file__", None) or "(namespace)")
"""


def check_import(prefix, modules):
    """Import each module in a fresh interpreter that sees only PREFIX and the run dependencies (not the
    build dependencies, not the source tree): what a user who loads the package's module gets."""
    if not modules:
        print("sitedist: no modules to import (the recipe's 'import: []')")
        return
    env = dict(os.environ)
    env["SITEDIST_PYTHONPREFIXES"] = os.pathsep.join(
        [prefix] + [p for p in os.environ.get("SITEDIST_RUN_PYTHONPREFIXES", "").split(os.pathsep) if p])
    env.pop("PYTHONPATH", None)
    python = os.environ.get("SITEDIST_PYTHON") or sys.executable
    workdir = tempfile.mkdtemp(prefix="import-check-", dir=os.environ.get("TMPDIR"))
    proc = subprocess.run([python, "-c", CHECK, *modules], cwd=workdir, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    shutil.rmtree(workdir, ignore_errors=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode == 0:
        return
    missing = re.search(r"^MISSING\t(\S+)\t(\S*)\n", proc.stdout + "\n", re.M)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    if missing and missing.group(2) and missing.group(2).split(".")[0] != missing.group(1).split(".")[0]:
        fail(f"import check: 'import {missing.group(1)}' fails after install: it needs the module "
             f"{missing.group(2)!r}, which none of the recipe's run dependencies provides. Add the recipe that "
             f"provides it (e.g. py-{canonical(missing.group(2).split('.')[0])}) to 'depends: run:'")
    if missing:
        fail(f"import check: 'import {missing.group(1)}' fails after install: the package installed no module "
             f"{missing.group(1)!r}. Name the modules it provides in the recipe's 'import:'")
    fail(f"import check: importing {' '.join(modules)} fails after install: {last}")


def main(argv):
    if not argv or argv[0] not in ("build", "check-import"):
        fail("usage: build --prefix P [--ignore NAME]... [-C KEY=VALUE]... | check-import --prefix P MODULE...")
    command, prefix, ignore, settings, rest = argv[0], None, [], [], []
    it = iter(argv[1:])
    for arg in it:
        if arg == "--prefix":
            prefix = next(it)
        elif arg == "--ignore":
            ignore.append(next(it))
        elif arg == "-C":
            settings.append(next(it))
        else:
            rest.append(arg)
    if not prefix:
        fail("--prefix is required")
    if command == "build":
        build(prefix, ignore, config_settings(settings))
    else:
        check_import(prefix, rest)


if __name__ == "__main__":
    main(sys.argv[1:])
