"""Pythons in the store: the prefix of a host Python, and the hook that makes Python packages importable.

A **host Python**'s store prefix is a virtual environment over the host's interpreter (``pyvenv.cfg``,
``bin/python3`` linked to it, no system site-packages), with the hook in its site-packages. A **Python
built from a recipe** that ``provides: [python]`` gets the same hook, and a ``pyvenv.cfg`` naming its
own ``bin`` (running it directly is unchanged; a profile or develop environment linking to it becomes
a virtual environment whose site-packages is the merged forest).

The hook is a ``.pth`` file that imports a small module: for each prefix in ``SITEDIST_PYTHONPREFIXES``
(which the modules of Python packages prepend to) it adds ``<prefix>/lib/pythonX.Y/site-packages`` for
its own X.Y only. EasyBuild's ``EBPYTHONPREFIXES`` is the model; admin_docs/python.md says why not
``PYTHONPATH``.
"""

import os
import subprocess

from sitedist.core.store import python_site_dirs as site_dirs
from sitedist.errors import BuildError

HOOK_MODULE = "_sitedist_pythonprefixes"
HOOK_VARIABLE = "SITEDIST_PYTHONPREFIXES"

HOOK = '''"""sitedist: add the site-packages of the prefixes in SITEDIST_PYTHONPREFIXES (set by the modules of
Python packages) to sys.path, for this Python's version only, after its own site-packages. Other
Python versions and virtual environments made from this Python never see them (unlike PYTHONPATH).
Ignored under -E and -I, like PYTHONPATH. Written by sitedist; see admin_docs/python.md."""

import os
import site
import sys


def _add():
    if sys.flags.ignore_environment:
        return
    sub = os.path.join("lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    for prefix in os.environ.get("SITEDIST_PYTHONPREFIXES", "").split(os.pathsep):
        path = os.path.join(prefix, sub)
        if os.path.isabs(prefix) and os.path.isdir(path):
            site.addsitedir(path)


try:
    _add()
except Exception as _exc:  # never stop Python from starting
    sys.stderr.write("sitedist: SITEDIST_PYTHONPREFIXES not used: %s\\n" % (_exc,))
'''
HOOK_PTH = f"import {HOOK_MODULE}\n"




def install_hook(site_dir, python):
    """The hook in ``site_dir``, byte-compiled by ``python`` (the interpreter that runs it) as an
    unchecked hash-based .pyc like the packages' own: else the first run of that Python by a user who may
    write there (root) would add __pycache__ to the sealed prefix, which `sitedist verify` reports."""
    os.makedirs(site_dir, exist_ok=True)
    module = os.path.join(site_dir, HOOK_MODULE + ".py")
    with open(module, "w", encoding="utf-8") as f:
        f.write(HOOK)
    with open(os.path.join(site_dir, HOOK_MODULE + ".pth"), "w", encoding="utf-8") as f:
        f.write(HOOK_PTH)
    if not os.path.exists(python):
        return
    done = subprocess.run([python, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", module],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BuildError(f"{python} could not byte-compile {module}: {(done.stdout + done.stderr).strip()[-2000:]}")


def _pyvenv_cfg(home, version, executable):
    return (f"home = {home}\ninclude-system-site-packages = false\nversion = {version}\n"
            f"executable = {executable}\n")


def make_host_python(prefix, python):
    """The store prefix of host Python ``python`` (a host.python.HostPython): a virtual environment over its
    interpreter with the hook (what ``python3 -m venv --without-pip`` makes, plus the hook)."""
    bindir = os.path.join(prefix, "bin")
    os.makedirs(bindir)
    versioned = f"python{python.major_minor}"
    os.symlink(python.executable, os.path.join(bindir, versioned))
    for alias in ("python3", "python"):
        os.symlink(versioned, os.path.join(bindir, alias))
    with open(os.path.join(prefix, "pyvenv.cfg"), "w", encoding="utf-8") as f:
        f.write(_pyvenv_cfg(os.path.dirname(python.executable), python.version, python.executable))
    install_hook(os.path.join(prefix, "lib", versioned, "site-packages"), python.executable)


def finish_provider(prefix, log):
    """After building a recipe that ``provides: [python]``: the hook in its site-packages, and a
    ``pyvenv.cfg`` naming its own bin/ (see the module's doc)."""
    sites = site_dirs(prefix)
    if not sites:
        raise FileNotFoundError(f"{prefix}/lib/pythonX.Y/site-packages: the recipe says it provides Python, "
                                "but its prefix has no site-packages directory")
    python = os.path.join(prefix, "bin", "python3")
    for rel in sites:
        install_hook(os.path.join(prefix, rel), python)
        log.write(f"sitedist: installed the {HOOK_VARIABLE} hook in {rel}\n")
    cfg = os.path.join(prefix, "pyvenv.cfg")
    if not os.path.exists(cfg) and os.path.exists(python):
        version = os.path.basename(os.path.dirname(sites[-1]))[len("python"):]
        with open(cfg, "w", encoding="utf-8") as f:
            f.write(_pyvenv_cfg(os.path.join(prefix, "bin"), version, os.path.realpath(python)))


def python_executable(node, prefixes):
    """The ``python3`` of a Python node (a host Python's virtual environment or a recipe's installation)."""
    return os.path.join(prefixes[node.key], "bin", "python3")
