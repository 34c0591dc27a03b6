"""The host's Python as a host package: found by running it, identified by implementation, version, ABI
tag and platform, never by its path (admin_docs/python.md).

``python3`` is looked for on ``PATH``, then in ``host: paths:`` (or only in a declared prefix's ``bin/``).
Each one found is asked, in isolated mode (``-I``: no user site-packages, no ``PYTHON*`` variables),
for the facts below. A virtual environment's ``python3`` counts as its base interpreter: what packages
are built for is the interpreter, never the environment it was found in.
"""

import json
import os
from dataclasses import dataclass

# Printed by the probed interpreter: what it is (the identity) and where it lives (not hashed).
_FACTS = r"""
import json, os, platform, sys, sysconfig
abi = sys.implementation.cache_tag or ""
if abi.startswith("cpython-"):
    abi = "cp" + abi[len("cpython-"):] + getattr(sys, "abiflags", "")
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "abi": abi,
    "platform": sysconfig.get_platform(),
    "executable": os.path.realpath(sys.executable),
    "base_prefix": sys.base_prefix,
    "major_minor": "%d.%d" % sys.version_info[:2],
}))
"""


@dataclass(frozen=True)
class HostPython:
    name: str            # always 'python'
    implementation: str  # 'cpython', 'pypy'
    version: str         # '3.11.2'
    abi: str             # PEP 425 ABI tag: 'cp311'
    platform: str        # sysconfig.get_platform(): 'linux-x86_64'
    executable: str      # the real interpreter (symlinks and virtual environments resolved)
    prefix: str          # its installation prefix (sys.base_prefix)
    found: str           # the python3 that was probed, as found on PATH or in host.paths

    def identity(self):
        return {"implementation": self.implementation, "version": self.version, "abi": self.abi,
                "platform": self.platform}

    @property
    def major_minor(self):
        return ".".join(self.version.split(".")[:2])


def _probe_one(runner, path):
    result = runner.run(path, "-I", "-c", _FACTS)
    if result is None:
        return None
    if result[0] != 0:
        runner.failed((path, "-I", "-c", "..."), result)
        return None
    try:
        facts = json.loads(result[1].strip().splitlines()[-1])
        return HostPython(name="python", implementation=facts["implementation"], version=facts["version"],
                          abi=facts["abi"], platform=facts["platform"], executable=facts["executable"],
                          prefix=facts["base_prefix"], found=path)
    except (ValueError, KeyError, IndexError, TypeError):
        runner.problems.append(f"{path}: not a Python 3 interpreter (`{path} -I -c ...` printed no facts)")
        return None


def probe_pythons(runner, dirs):
    """Every distinct ``python3`` in ``dirs`` (by its real interpreter), in search order."""
    found, seen = [], set()
    for d in dirs:
        path = os.path.join(os.path.abspath(d), "python3")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        python = _probe_one(runner, path)
        if python is None or python.executable in seen:
            continue
        seen.add(python.executable)
        found.append(python)
    return found
