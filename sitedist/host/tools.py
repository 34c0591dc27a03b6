"""Build tools (CMake, Ninja, Meson, pkg-config, make, the autotools) and the CUDA toolkit as host
packages: found by running them, identified by name and version, never by path.

A build tool's identity is ``{name, version}``; the CUDA toolkit's is ``{name: "cuda", version}`` (the
full toolkit version, ``13.0.88``). The driver and the GPUs a probe sees are recorded for ``sitedist
probe`` only: builds do not need a GPU, and the same toolkit builds the same binaries without one.
admin_docs/build-tools.md and admin_docs/gpu.md explain the choices.
"""

import glob
import os
import re
from dataclasses import dataclass

from sitedist.core.versions import version_key, version_matches
from sitedist.errors import ConfigError

# name -> (main executable, companion executables linked with it, version arguments, version pattern)
KNOWN_TOOLS = {
    "cmake": ("cmake", ("ctest", "cpack"), ("--version",), r"cmake version (\d[\w.+-]*)"),
    "ninja": ("ninja", (), ("--version",), r"^(\d[\w.+-]*)"),
    "meson": ("meson", (), ("--version",), r"^(\d[\w.+-]*)"),
    "pkg-config": ("pkg-config", (), ("--version",), r"^(\d[\w.+-]*)"),
    "make": ("make", (), ("--version",), r"GNU Make (\d[\w.+-]*)"),
    "autoconf": ("autoconf", ("autoreconf", "autoheader", "autom4te", "autoscan", "autoupdate", "ifnames"),
                 ("--version",), r"\(GNU Autoconf\) (\d[\w.+-]*)"),
    "automake": ("automake", ("aclocal",), ("--version",), r"\(GNU automake\) (\d[\w.+-]*)"),
    "libtool": ("libtoolize", ("libtool",), ("--version",), r"\(GNU libtool\) (\d[\w.+-]*)"),
    "patch": ("patch", (), ("--version",), r"GNU patch (\d[\w.+-]*)"),
    "perl": ("perl", (), ("-e", "print $^V"), r"^v(\d[\w.+-]*)"),
}
# Tools a build must declare to use: where one is not an input of a build, its name on that build's PATH
# runs a stub that fails and says how to declare it, so /usr/bin/cmake is never used unseen. (make,
# patch, perl and pkg-config are looked for by configure scripts on their own; they are base system
# unless declared.)
GUARDED = {"cmake": ("cmake", "ctest", "cpack"), "ninja": ("ninja",), "meson": ("meson",),
           "autoconf": ("autoconf", "autoreconf", "autoheader"), "automake": ("automake", "aclocal"),
           "libtool": ("libtoolize",), "cuda": ("nvcc",)}
_GENERIC_VERSION = r"(\d+\.\d+(?:\.\d+)*)"
CUDA_GLOBS = ("/usr/local/cuda*/bin",)


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    prefix: str
    executables: tuple   # ((name, absolute path), ...): the main executable first

    def identity(self):
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class CudaToolkit:
    name: str            # always 'cuda'
    version: str         # full toolkit version, e.g. '13.0.88'
    prefix: str          # the toolkit root (CUDA_HOME)
    nvcc: str
    archs: tuple         # GPU codes this nvcc builds for: ('75', '80', ..., '120')
    executables: tuple   # ((name, absolute path), ...) of the toolkit's bin/
    lib_dir: str         # where libcudart.so is ('' if not found)

    def identity(self):
        return {"name": "cuda", "version": self.version}


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    compute_capability: str
    driver: str


def tool_spec(name):
    """(main executable, companions, version argv, version pattern) of a tool; an unknown tool is found
    by its own name and the first dotted number of ``NAME --version``."""
    return KNOWN_TOOLS.get(name, (name, (), ("--version",), _GENERIC_VERSION))


def _executable(directory, name):
    path = os.path.join(os.path.abspath(directory), name)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def probe_tool(runner, name, dirs):
    """Every distinct installation of tool ``name`` in ``dirs`` (one per real directory), in order."""
    main, companions, argv, pattern = tool_spec(name)
    found, seen = [], set()
    for d in dirs:
        path = _executable(d, main)
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        result = runner.run(path, *argv)
        if result is None:
            continue
        if result[0] != 0:
            runner.failed((path, *argv), result)
            continue
        m = re.search(pattern, result[1] + "\n" + result[2], re.M)
        if not m:
            first = (result[1].strip() or result[2].strip()).splitlines()[:1]
            runner.problems.append(f"{path}: no version in the output of `{path} {' '.join(argv)}`: "
                                   f"{first[0] if first else ''!r}")
            continue
        exes = [(main, path)] + [(c, p) for c in companions for p in [_executable(d, c)] if p]
        found.append(Tool(name=name, version=m.group(1), prefix=os.path.dirname(os.path.dirname(real)),
                          executables=tuple(exes)))
    return found


def probe_tools(runner, dirs, names=tuple(KNOWN_TOOLS)):
    return [t for name in names for t in probe_tool(runner, name, dirs)]


# ---------------------------------------------------------------------------------------------- CUDA

def cuda_dirs(dirs):
    """The directories searched for nvcc: the given ones, then /usr/local/cuda*/bin (newest name first)."""
    extra = sorted((d for pattern in CUDA_GLOBS for d in glob.glob(pattern)), reverse=True)
    return list(dirs) + [d for d in extra if d not in dirs]


def probe_cuda(runner, dirs):
    """Every distinct CUDA toolkit (by the real path of nvcc) in ``dirs`` and /usr/local/cuda*/bin."""
    found, seen = [], set()
    for d in cuda_dirs(dirs):
        nvcc = _executable(d, "nvcc")
        if nvcc is None:
            continue
        toolkit = _toolkit(runner, nvcc)
        if toolkit is None or toolkit.nvcc in seen:
            continue
        seen.add(toolkit.nvcc)
        found.append(toolkit)
    return found


def _real_nvcc(path):
    """The nvcc binary behind ``path``: a symlink, or a one-line ``exec /path/nvcc "$@"`` wrapper script
    (as some installers put into /usr/local/bin)."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as f:
            head = f.read(512)
    except OSError:
        return real
    m = re.match(rb"#!\s*/bin/sh\s*\n\s*exec\s+(/\S+/nvcc)\s+\"\$@\"\s*\Z", head)
    return os.path.realpath(m.group(1).decode()) if m and os.path.isfile(m.group(1).decode()) else real


def _toolkit(runner, path):
    out = runner.output(path, "--version")
    if out is None:
        return None
    m = re.search(r"release [\d.]+, V(\d+\.\d+(?:\.\d+)*)", out)
    if not m:
        runner.problems.append(f"{path}: no toolkit version in the output of `{path} --version`")
        return None
    nvcc = _real_nvcc(path)
    bindir = os.path.dirname(nvcc)
    prefix = os.path.dirname(bindir)
    codes = runner.output(path, "--list-gpu-code") or ""
    archs = tuple(dict.fromkeys(c[3:] for c in codes.split() if c.startswith("sm_")))
    exes = []
    for name in sorted(os.listdir(bindir)):
        exe = _executable(bindir, name)
        if exe and not name.startswith("__") and name != "nvcc.profile":
            exes.append((name, exe))
    lib_dir = next((os.path.join(prefix, sub) for sub in ("lib64", "lib", "targets/x86_64-linux/lib",
                                                         "targets/sbsa-linux/lib")
                    if glob.glob(os.path.join(prefix, sub, "libcudart.so*"))), "")
    return CudaToolkit(name="cuda", version=m.group(1), prefix=prefix, nvcc=nvcc, archs=archs,
                       executables=tuple(exes), lib_dir=lib_dir)


def probe_gpus(runner):
    """The GPUs nvidia-smi reports, with the driver version; [] where there is no nvidia-smi or no GPU."""
    smi = runner.which("nvidia-smi") or _executable("/usr/bin", "nvidia-smi")
    if smi is None:
        return []
    out = runner.output(smi, "--query-gpu=index,name,compute_cap,driver_version", "--format=csv,noheader")
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(Gpu(index=parts[0], name=parts[1], compute_capability=parts[2], driver=parts[3]))
    return gpus


# ------------------------------------------------------------------------------------ constraints

_CONSTRAINT = re.compile(r"\A\s*(>=|<=|==|!=|>|<)?\s*(\d[\w.+-]*)\s*\Z")


def _vkey(version):
    parts, pre = version_key(version)[:2]   # the components and the pre-release rank, not the text
    while parts and parts[-1] == (1, 0, ""):   # 3.20 == 3.20.0
        parts = parts[:-1]
    return parts, pre


def check_constraint(text):
    """Raise ValueError unless ``text`` is a valid constraint: '>=3.20', '>=3.20,<4', '3.25' (prefix)."""
    for part in str(text).split(","):
        if not _CONSTRAINT.match(part):
            raise ValueError(f"{part.strip()!r} is not a version constraint")


def satisfies(version, text):
    """Whether ``version`` satisfies every comma-separated clause of ``text``. A bare version matches by
    whole components ('3.25' matches '3.25.1'), like a host package pin."""
    for part in str(text).split(","):
        m = _CONSTRAINT.match(part)
        if not m:
            raise ConfigError(f"{part.strip()!r} is not a version constraint",
                              hint="write e.g. '>=3.20', '>=3.20,<4' or '3.25'")
        op, want = m.group(1), m.group(2)
        have, need = _vkey(version), _vkey(want)
        ok = {None: lambda: version_matches(want, version), "==": lambda: version_matches(want, version),
              "!=": lambda: not version_matches(want, version),
              ">=": lambda: have >= need, ">": lambda: have > need,
              "<=": lambda: have <= need or version_matches(want, version), "<": lambda: have < need}[op]()
        if not ok:
            return False
    return True
