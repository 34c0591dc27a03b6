"""Helpers for the reliability tests: cheap synthetic recipes (real `build: commands` builds of a
directory source) and `sitedist verify --json`."""

import json
import os
import textwrap

from conftest import run_cli, write


def synthetic(recipes, name, version="1.0", deps=(), counter=None, commands=(), options=None):
    """Write recipe ``name`` into ``recipes`` with a directory source of its own. Its build installs
    bin/<name> (a script printing its name), share/<name>/data.txt and a symlink to it, lib/lib<name>.txt;
    with ``counter``, it appends its prefix to that file (one line per artifact built, from any process)."""
    src = os.path.join(str(recipes), "src", name)
    write(os.path.join(src, "data.txt"), f"{name} {version}\n")
    lines = [
        'mkdir -p "$PREFIX/bin" "$PREFIX/share/%s" "$PREFIX/lib"' % name,
        'cp data.txt "$PREFIX/share/%s/"' % name,
        'ln -s data.txt "$PREFIX/share/%s/link"' % name,
        "printf '#!/bin/sh\\necho %s\\n' > \"$PREFIX/bin/%s\"" % (name, name),
        'chmod 755 "$PREFIX/bin/%s"' % name,
        'echo "%s" > "$PREFIX/lib/lib%s.txt"' % (name, name),
    ] + list(commands)
    if counter:
        lines.append(f'echo "$PREFIX" >> {counter}')
    body = {"name": name, "versions": {version: {"path": f"src/{name}"}}, "build": "commands",
            "commands": lines}
    if deps:
        body["depends"] = {"link": list(deps)}
    if options:
        body["options"] = options
    return write(os.path.join(str(recipes), f"{name}.yml"), json.dumps(body, indent=1))


def config(tmp_path, packages, recipes, store=None, modules=None, extra="", name="site.yml"):
    """A site config over ``recipes`` (synthetic ones, then the shipped ones) and the shared sources.
    ``packages``: names, or a mapping of names to their entries (YAML flow text)."""
    from conftest import site_config

    text = extra
    if modules:
        text += f"\nmodules: {{root: {modules}, formats: [lua, tcl]}}\n"
    packages = packages if isinstance(packages, dict) else {p: None for p in packages}
    return site_config(tmp_path, packages, extra=textwrap.dedent(text), store=store,
                       recipes=[recipes], name=name)


def verify(config_path, *args):
    """Run `sitedist verify --json`: (exit status, the JSON document, stderr)."""
    proc = run_cli("verify", config_path, "--json", *args, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def kinds(report):
    """{kind: [finding]} of one verify report (errors and notes)."""
    out = {}
    for f in report["errors"] + report["notes"]:
        out.setdefault(f["kind"], []).append(f)
    return out


def artifact(store, name):
    """The one prefix of ``name`` in ``store``."""
    entries = os.listdir(os.path.join(str(store), name))
    assert len(entries) == 1, entries
    return os.path.join(str(store), name, entries[0])


# The crash harness of tests/test_crash.py and tests/test_binary_cache.py: the real CLI runs under it and
# stops itself (SIGSTOP) at one moment (CRASH_AT) of the artifact whose id is CRASH_MATCH, after writing
# what it stopped at to CRASH_FLAG; the test then kills it with SIGKILL. The product has no test hooks:
# each file's ``moments`` code wraps product functions with ``wrap`` (before/after a call) and ``pause``.
_HARNESS_HEAD = r"""
import os, signal, sys, threading

point, match, flag = (os.environ.get(k, "") for k in ("CRASH_AT", "CRASH_MATCH", "CRASH_FLAG"))


def pause(what):
    with open(flag + ".tmp", "w") as f:
        f.write(what)
    os.rename(flag + ".tmp", flag)
    # Sent to this thread, so that this thread stops at once (a process-directed SIGSTOP may be taken
    # by another thread while this one runs on for some microseconds).
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def wrap(owner, name, before=None, after=None):
    orig = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before and before(*args, **kwargs):
            pause("before " + name)
        result = orig(*args, **kwargs)
        if after and after(*args, **kwargs):
            pause("after " + name)
        return result
    setattr(owner, name, wrapper)


marker = lambda src, dst, *a, **k: match in str(dst) and str(dst).endswith("/.sitedist/complete")
"""

_HARNESS_TAIL = r"""
from sitedist.cli.main import main
main(sys.argv[1:])
"""


def crash_harness(moments):
    """The harness program (for ``python -c``) with ``moments``: code choosing what to wrap by ``point``."""
    return _HARNESS_HEAD + moments + _HARNESS_TAIL
