"""Find the compilers and MPI implementations a host already has: the host packages.

Every fact comes from running the tools themselves (``gcc -dumpfullversion``, ``mpicc --showme``,
``mpicc -show``, ...), each run bounded by a timeout: a probe that hangs is killed with its whole
process group and reported, a broken one is reported, and neither stops the others. Which facts enter
build hashes is ``Compiler.identity()`` / ``MPI.identity()``; admin_docs/host-packages.md explains why.
"""

import mmap
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from sitedist.core.versions import version_matches
from sitedist.errors import ConfigError, HostError
from sitedist.host.target import host_target

LANGUAGES = ("c", "c++", "fortran")

# compiler family -> driver names for c, c++, fortran (versioned names like gcc-12 are found too)
COMPILER_DRIVERS = {
    "gcc": (("gcc",), ("g++",), ("gfortran",)),
    "clang": (("clang",), ("clang++",), ("flang", "flang-new")),
    "intel": (("icx",), ("icpx",), ("ifx",)),
    "nvhpc": (("nvc",), ("nvc++",), ("nvfortran",)),
    "aocc": (("amdclang",), ("amdclang++",), ("amdflang",)),
    "cray": (("cc",), ("CC",), ("ftn",)),
}
# C wrapper name -> (C++ wrapper names, Fortran wrapper names); each may carry a suffix (mpicc.openmpi)
MPI_WRAPPERS = {
    "mpicc": (("mpicxx", "mpic++", "mpiCC"), ("mpifort", "mpif90", "mpif77")),
    "mpiicx": (("mpiicpx",), ("mpiifx",)),
    "mpiicc": (("mpiicpc",), ("mpiifort",)),
}
MPI_NAMES = ("openmpi", "mpich", "intel-mpi", "cray-mpich")
_MPI_BRANDS = (("intel-mpi", r"Intel\(R\) MPI Library,? (?:for \S+ OS, Version )?(\d[\w.]*)"),
               ("mpich", r"for MPICH version (\d[\w.]*)"))
_VERSION = r"\d+\.\d+(?:\.\d+)*(?:-\d+)?"
_DRIVER_RE = re.compile(r"^(?P<base>%s)(?:-(?P<ver>\d+(?:\.\d+)*))?\Z" % "|".join(
    re.escape(n) for drivers in COMPILER_DRIVERS.values() for names in drivers for n in names))
_WRAPPER_RE = re.compile(r"^(?P<base>%s)(?P<suffix>\.[\w+-]+)?\Z" % "|".join(MPI_WRAPPERS))
_FALLBACK_LIBDIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")


@dataclass(frozen=True)
class Compiler:
    name: str
    version: str
    prefix: str
    cc: Optional[str]
    cxx: Optional[str]
    fc: Optional[str]
    languages: tuple
    triple: str

    def identity(self):
        return {"name": self.name, "version": self.version, "triple": self.triple,
                "languages": list(self.languages)}


@dataclass(frozen=True)
class MPI:
    name: str
    version: str
    prefix: str
    mpicc: Optional[str]
    mpicxx: Optional[str]
    mpifc: Optional[str]
    mpirun: Optional[str]
    languages: tuple
    wraps: str
    compile_flags: tuple
    link_flags: tuple
    libraries: tuple

    def identity(self):
        return {"name": self.name, "version": self.version, "wraps": self.wraps,
                "libraries": sorted(self.libraries)}


def _to_json(item):
    return {**asdict(item), "identity": item.identity()}


def _from_json(cls, doc):
    return cls(**{f.name: tuple(doc[f.name]) if isinstance(doc[f.name], list) else doc[f.name]
                  for f in fields(cls)})


@dataclass
class ProbeReport:
    compilers: list
    mpis: list
    problems: list
    target: dict
    tools: list = field(default_factory=list)   # host.tools.Tool: build tools (cmake, ninja, make, ...)
    cuda: list = field(default_factory=list)    # host.tools.CudaToolkit
    gpus: list = field(default_factory=list)    # host.tools.Gpu (for the record: never hashed)
    pythons: list = field(default_factory=list)  # host.python.HostPython: python3 on PATH and in host.paths

    def to_json(self):
        return {"compilers": [_to_json(c) for c in self.compilers], "mpis": [_to_json(m) for m in self.mpis],
                "tools": [_to_json(t) for t in self.tools], "cuda": [_to_json(c) for c in self.cuda],
                "gpus": [asdict(g) for g in self.gpus], "pythons": [_to_json(p) for p in self.pythons],
                "problems": list(self.problems), "target": dict(self.target)}

    @classmethod
    def from_json(cls, doc):
        from sitedist.host.python import HostPython
        from sitedist.host.tools import CudaToolkit, Gpu, Tool

        def tuples(value):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)

        return cls(compilers=[_from_json(Compiler, c) for c in doc["compilers"]],
                   mpis=[_from_json(MPI, m) for m in doc["mpis"]],
                   tools=[Tool(**{**_fields(Tool, t), "executables": tuples(t["executables"])})
                          for t in doc["tools"]],
                   cuda=[CudaToolkit(**{**_fields(CudaToolkit, c), "executables": tuples(c["executables"]),
                                        "archs": tuple(c["archs"])}) for c in doc["cuda"]],
                   gpus=[Gpu(**g) for g in doc["gpus"]],
                   pythons=[HostPython(**_fields(HostPython, p)) for p in doc["pythons"]],
                   problems=list(doc["problems"]), target=dict(doc["target"]))


def _fields(cls, doc):
    return {f.name: doc[f.name] for f in fields(cls)}


class _Runner:
    """Runs probe commands with a timeout and collects the problems; remembers results and
    gives up on an executable after it hung once."""

    def __init__(self, search_dirs, timeout, problems=None):
        self.search_path = os.pathsep.join(search_dirs)
        self.env = dict(os.environ, PATH=self.search_path, LC_ALL="C")
        self.timeout = timeout
        self.problems = [] if problems is None else problems
        self._results = {}
        self._hung = set()

    def run(self, *argv):
        """(exit code, stdout, stderr), or None when the command could not run or hung."""
        if argv not in self._results:
            self._results[argv] = None if argv[0] in self._hung else self._run(argv)
        return self._results[argv]

    def _run(self, argv):
        command = " ".join(shlex.quote(a) for a in argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=self.env, start_new_session=True,
                                    text=True, errors="replace")
        except OSError as exc:
            self.problems.append(f"{argv[0]}: cannot run `{command}`: {exc.strerror}")
            return None
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            # the whole group: a wrapper script's children keep the pipes open otherwise
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            self._hung.add(argv[0])
            self.problems.append(f"{argv[0]}: `{command}` did not finish within {self.timeout:g} s and was "
                                 f"killed; fix or remove it, or raise the probe timeout")
            return None
        return proc.returncode, out, err

    def failed(self, argv, result):
        """Record a non-zero exit as a problem."""
        rc, out, err = result
        tail = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
        self.problems.append(f"{argv[0]}: `{' '.join(argv)}` exited with {rc}: {tail[0]}")

    def output(self, *argv):
        """stdout of a successful run, else None (a failure is recorded as a problem)."""
        result = self.run(*argv)
        if result is None:
            return None
        if result[0] != 0:
            self.failed(argv, result)
            return None
        return result[1]

    def which(self, command):
        return shutil.which(command, path=self.search_path)


def _search_dirs(extra_dirs, path, problems):
    dirs, seen = [], set()
    for d in [d for d in path.split(os.pathsep) if d] + list(extra_dirs):
        real = os.path.realpath(d)
        if not os.path.isdir(real):
            if d in extra_dirs:
                problems.append(f"{d}: not a directory (named as a directory to probe)")
        elif real not in seen:
            seen.add(real)
            dirs.append(d)
    return dirs


def _executables(directory, pattern):
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        m = pattern.match(name)
        path = os.path.join(os.path.abspath(directory), name)
        if m and os.path.isfile(path) and os.access(path, os.X_OK):
            out.append((m, path))
    return out


# ---------------------------------------------------------------------------------------- compilers

def _family_of(base):
    for family, drivers in COMPILER_DRIVERS.items():
        for lang, names in zip(LANGUAGES, drivers):
            if base in names:
                return family, lang
    raise KeyError(base)


def _is_cray_wrapper(path):
    """Debian's ``cc`` is gcc: only the Cray PE wrapper (in $CRAYPE_DIR or .../craype/...) counts as cray."""
    real, craype = os.path.realpath(path), os.environ.get("CRAYPE_DIR")
    return "/craype/" in real or bool(craype and real.startswith(os.path.realpath(craype) + os.sep))


def _driver_version(runner, family, path):
    if family == "gcc":
        out = runner.output(path, "-dumpfullversion", "-dumpversion")
        return out.strip() if out and re.fullmatch(r"\d[\w.]*", out.strip()) else None
    out = runner.output(path, "--version")
    if out is None:
        return None
    first = next((line for line in out.splitlines() if line.strip()), "")
    m = (family == "aocc" and re.search(r"AOCC_(\d+(?:\.\d+)+)", out)) or re.search(_VERSION, first)
    if not m:
        runner.problems.append(f"{path}: no version in the output of `{path} --version`: {first!r}")
        return None
    return m.group(1) if m.groups() else m.group(0)


def _find_compilers(runner, dirs, families, declared=False):
    groups = {}   # (family, version, real directory) -> {'plain': bool, lang: path}
    for d in dirs:
        for m, path in _executables(d, _DRIVER_RE):
            family, lang = _family_of(m["base"])
            if family not in families or (family == "cray" and not declared and not _is_cray_wrapper(path)):
                continue
            version = _driver_version(runner, family, path)
            if version is None:
                continue
            realdir = os.path.dirname(os.path.realpath(path))
            group = groups.setdefault((family, version, realdir), {"plain": False})
            plain = m["ver"] is None
            group["plain"] |= plain
            if lang not in group or (plain and not group[lang][1]):
                group[lang] = (path, plain)
    compilers = []
    for (family, version, realdir), group in sorted(groups.items(), key=lambda kv: not kv[1]["plain"]):
        drivers = {lang: group[lang][0] for lang in LANGUAGES if lang in group}
        machine = runner.output(next(iter(drivers.values())), "-dumpmachine") if family != "nvhpc" else None
        compilers.append(Compiler(
            name=family, version=version, prefix=os.path.dirname(realdir),
            cc=drivers.get("c"), cxx=drivers.get("c++"), fc=drivers.get("fortran"),
            languages=tuple(drivers), triple=machine.strip() if machine and len(machine.split()) == 1 else ""))
    return compilers


# ---------------------------------------------------------------------------------------------- MPI

def elf_dynamic(path):
    """The dynamic section of an ELF file: {"soname": str|None, "needed": [sonames], "runpath": [dirs],
    "rpath": [dirs], "machine": e_machine}; None for anything else (linker scripts, static archives,
    object files and static executables, which have no dynamic section)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"\x7fELF":
                return None
            wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
            (machine,) = struct.unpack_from(order + "H", data, 0x12)
            if wide:
                (phoff,), (phentsize, phnum) = struct.unpack_from(order + "Q", data, 0x20), \
                    struct.unpack_from(order + "HH", data, 0x36)
            else:
                (phoff,), (phentsize, phnum) = struct.unpack_from(order + "I", data, 0x1C), \
                    struct.unpack_from(order + "HH", data, 0x2A)
            loads, dynamic = [], None
            for i in range(phnum):
                at = phoff + i * phentsize
                if wide:
                    p_type, _, off, vaddr, _, filesz = struct.unpack_from(order + "IIQQQQ", data, at)
                else:
                    p_type, off, vaddr, _, filesz = struct.unpack_from(order + "IIIII", data, at)
                if p_type == 1:
                    loads.append((vaddr, off, filesz))
                elif p_type == 2:
                    dynamic = (off, filesz)
            if dynamic is None:
                return None
            entry = order + ("qQ" if wide else "iI")
            tags = list(struct.iter_unpack(entry, data[dynamic[0]:dynamic[0] + dynamic[1]]))
            strtab = next((value for tag, value in tags if tag == 5), None)   # DT_STRTAB
            if strtab is None:
                return None
            base = next(off + strtab - vaddr for vaddr, off, size in loads if vaddr <= strtab < vaddr + size)

            def string(offset):
                return data[base + offset:data.find(b"\0", base + offset)].decode("utf-8", "replace")

            found = {"soname": None, "needed": [], "runpath": [], "rpath": [], "machine": machine}
            for tag, value in tags:
                if tag == 0:      # DT_NULL ends the section
                    break
                if tag == 1:      # DT_NEEDED
                    found["needed"].append(string(value))
                elif tag == 14:   # DT_SONAME
                    found["soname"] = string(value)
                elif tag in (15, 29):   # DT_RPATH, DT_RUNPATH
                    found["rpath" if tag == 15 else "runpath"] += [d for d in string(value).split(":") if d]
            return found
    except (OSError, ValueError, struct.error, StopIteration):
        return None


def elf_soname(path):
    """DT_SONAME of an ELF shared library; None for anything else (linker scripts, static archives)."""
    found = elf_dynamic(path)
    return found["soname"] if found else None


def _library_dirs(runner, compiler):
    """Where the linker behind ``compiler`` looks for -l libraries by default."""
    out = runner.output(compiler, "-print-search-dirs") if compiler else None
    for line in (out or "").splitlines():
        if line.startswith("libraries:"):
            return [os.path.normpath(d) for d in line.split("=", 1)[-1].split(":") if d]
    return list(_FALLBACK_LIBDIRS)


def _libraries(runner, wrapper, flags, compiler):
    """Sonames of the shared libraries a link with ``flags`` picks, searched the way ld does."""
    dirs, names, sonames = [], [], []
    it = iter(flags)
    for flag in it:
        if flag in ("-L", "-l"):
            flag += next(it, "")
        if flag.startswith("-L"):
            dirs.append(flag[2:])
        elif flag.startswith("-l"):
            names.append(flag[3:] if flag.startswith("-l:") else f"lib{flag[2:]}.so")
        elif re.search(r"\.so(\.\d+)*\Z", flag) and os.path.isabs(flag):
            sonames.append(elf_soname(flag))
    dirs += _library_dirs(runner, compiler)
    for name in names:
        found = next((p for p in (os.path.join(d, name) for d in dirs) if os.path.exists(p)), None)
        if found:
            sonames.append(elf_soname(found))
        elif not any(os.path.exists(os.path.join(d, name[:-3] + ".a")) for d in dirs):
            runner.problems.append(f"{wrapper}: links {name}, which is in none of {', '.join(dirs)}")
    return [s for s in sonames if s]


def _compiler_name(runner, path):
    """'gcc 12.2.0' for the compiler an MPI wrapper runs."""
    m = _DRIVER_RE.match(os.path.basename(path))
    family = _family_of(m["base"])[0] if m else os.path.basename(path)
    version = _driver_version(runner, family, path)
    return f"{family} {version}" if version else family


def _identify_mpi(runner, wrapper):
    """(name, version) of the MPI behind a wrapper, or None (recorded as a problem)."""
    result = runner.run(wrapper, "--showme:version")
    if result is None:
        return None
    m = re.search(r"Open MPI v?(\d[\w.]*)", result[1])
    if result[0] == 0 and m:
        return "openmpi", m.group(1)
    result = runner.run(wrapper, "-v")
    if result is None:
        return None
    for name, pattern in _MPI_BRANDS:
        m = re.search(pattern, result[1] + result[2])
        if m:
            return name, m.group(1)
    if result[0] != 0:
        runner.failed((wrapper, "-v"), result)
    else:
        runner.problems.append(f"{wrapper}: not recognised as an Open MPI, MPICH or Intel MPI wrapper")
    return None


def _show(runner, mpi_name, wrapper, compile_only=False):
    """The command line a wrapper runs: [compiler, flags...]; compile_only: without link flags."""
    if mpi_name == "openmpi":
        argv = (wrapper, "--showme:compile") if compile_only else (wrapper, "--showme")
    else:
        argv = (wrapper, "-show", "-c") if compile_only else (wrapper, "-show")
    out = runner.output(*argv)
    words = shlex.split(out) if out else None
    if compile_only and words is not None:
        return [w for w in words[0 if mpi_name == "openmpi" else 1:] if w != "-c"]
    return words or None


def _probe_wrapper_set(runner, directory, base, suffix, c_wrapper):
    ident = _identify_mpi(runner, c_wrapper)
    if ident is None:
        return None
    name, version = ident
    cxx_names, fc_names = MPI_WRAPPERS[base]

    def sibling(names):
        paths = (os.path.join(directory, n + suffix) for n in names)
        return next((p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)), None)

    wrappers, libraries, compile_flags, link_flags, wraps = {}, [], (), (), ""
    for lang, wrapper in zip(LANGUAGES, (c_wrapper, sibling(cxx_names), sibling(fc_names))):
        line = _show(runner, name, wrapper) if wrapper else None
        if not line:
            continue
        compiler = runner.which(line[0])
        if compiler is None:
            runner.problems.append(f"{wrapper} ({name} {version}) runs {line[0]}, which is not found: "
                                   f"{lang} is not available with this MPI")
            continue
        wrappers[lang] = wrapper
        libraries += [s for s in _libraries(runner, wrapper, line[1:], compiler) if s not in libraries]
        if lang == "c":
            compile_flags = tuple(_show(runner, name, wrapper, compile_only=True) or ())
            link_flags = tuple(f for f in line[1:] if f not in compile_flags)
            wraps = _compiler_name(runner, compiler)
    if "c" not in wrappers:
        return None
    return MPI(name=name, version=version, prefix=os.path.dirname(os.path.realpath(directory)),
               mpicc=wrappers.get("c"), mpicxx=wrappers.get("c++"), mpifc=wrappers.get("fortran"),
               mpirun=_mpirun(runner, directory, suffix, name, version), languages=tuple(wrappers),
               wraps=wraps, compile_flags=compile_flags, link_flags=link_flags, libraries=tuple(libraries))


def _mpirun(runner, directory, suffix, name, version):
    for launcher in ("mpirun", "mpiexec"):
        path = os.path.join(directory, launcher + suffix)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            result = runner.run(path, "--version")
            if result and version in result[1] + result[2]:
                return path
            if result:
                runner.problems.append(f"{path}: does not report {name} {version}; it belongs to another MPI "
                                       f"(check the mpirun alternative) and is not used")
    return None


def _cray_mpich(runner, compilers):
    """Cray MPICH has no mpicc: the PE wrappers cc/CC/ftn add it when the cray-mpich module is loaded."""
    cray = next((c for c in compilers if c.name == "cray" and c.cc), None)
    prefix = os.environ.get("CRAY_MPICH_DIR") or os.environ.get("CRAY_MPICH_PREFIX")
    if cray is None or not prefix:
        return None
    m = re.search(_VERSION, os.environ.get("CRAY_MPICH_VERSION", "") or prefix)
    cflags = runner.output(cray.cc, "--cray-print-opts=cflags")
    libs = runner.output(cray.cc, "--cray-print-opts=libs")
    if not m or cflags is None or libs is None:
        runner.problems.append(f"cray-mpich in {prefix}: cannot read its version or flags from {cray.cc}")
        return None
    link_flags = tuple(shlex.split(libs))
    return MPI(name="cray-mpich", version=m.group(0), prefix=prefix, mpicc=cray.cc, mpicxx=cray.cxx,
               mpifc=cray.fc, mpirun=runner.which("srun"), languages=cray.languages,
               wraps=f"cray {cray.version}", compile_flags=tuple(shlex.split(cflags)), link_flags=link_flags,
               libraries=tuple(dict.fromkeys(_libraries(runner, cray.cc, link_flags, cray.cc))))


def _find_mpis(runner, dirs):
    mpis = {}   # (real C wrapper, identity) -> MPI; a suffixed name (mpicc.openmpi) wins over mpicc
    for d in dirs:
        for m, path in _executables(d, _WRAPPER_RE):
            mpi = _probe_wrapper_set(runner, d, m["base"], m["suffix"] or "", path)
            if mpi is None:
                continue
            key = (os.path.realpath(path), repr(sorted(mpi.identity().items())))
            if key not in mpis or (m["suffix"] and os.path.basename(mpis[key].mpicc) in MPI_WRAPPERS):
                mpis[key] = mpi
    return list(mpis.values())


# ------------------------------------------------------------------------------------------- public

def probe_host(extra_dirs=(), path=None, timeout=10.0):
    """Compilers and MPIs on ``path`` (default $PATH) and in ``extra_dirs``, and the CPU target."""
    problems = []
    dirs = _search_dirs(tuple(extra_dirs), os.environ.get("PATH", "") if path is None else path, problems)
    runner = _Runner(dirs, timeout, problems)
    compilers = _find_compilers(runner, dirs, COMPILER_DRIVERS)
    mpis = _find_mpis(runner, dirs)
    cray = _cray_mpich(runner, compilers)
    if cray is not None:
        mpis.append(cray)
    from sitedist.host import python, tools

    return ProbeReport(compilers=compilers, mpis=mpis, problems=problems, target=host_target(),
                       tools=tools.probe_tools(runner, dirs), cuda=tools.probe_cuda(runner, dirs),
                       gpus=tools.probe_gpus(runner), pythons=python.probe_pythons(runner, dirs))


def _declared_bin(kind, name, prefix, known):
    if name not in known:
        raise ConfigError(f"unknown {kind} {name!r}", hint=f"known: {', '.join(known)}")
    if not os.path.isdir(prefix):
        raise HostError(f"declared {kind} {name}: prefix {prefix} does not exist (or is not a directory); "
                        f"fix the prefix or install it there")
    return os.path.join(prefix, "bin")


def _pick_declared(kind, name, prefix, version, found, problems):
    if not found:
        detail = f"; problems: {'; '.join(problems)}" if problems else ""
        raise HostError(f"declared {kind} {name}: nothing usable found in {prefix}/bin{detail}")
    if version is None:
        return found[0]
    for item in found:
        if version_matches(version, item.version):
            return item
    raise HostError(f"declared {kind} {name} in {prefix}: the config pins version {version} but probing "
                    f"found {', '.join(item.version for item in found)}; fix the pin or the prefix")


def probe_declared_compiler(name, prefix, version=None, timeout=10.0):
    """The compiler of family ``name`` installed in ``prefix``/bin, optionally pinned to ``version``."""
    bindir = _declared_bin("compiler", name, prefix, tuple(COMPILER_DRIVERS))
    runner = _Runner([bindir] + os.environ.get("PATH", "").split(os.pathsep), timeout)
    found = _find_compilers(runner, [bindir], (name,), declared=True)
    return _pick_declared("compiler", name, prefix, version, found, runner.problems)


def probe_declared_mpi(name, prefix, version=None, timeout=10.0):
    """The MPI ``name`` whose wrappers are in ``prefix``/bin, optionally pinned to ``version``."""
    bindir = _declared_bin("MPI", name, prefix, MPI_NAMES)
    runner = _Runner([bindir] + os.environ.get("PATH", "").split(os.pathsep), timeout)
    if name == "cray-mpich":
        raise ConfigError("cray-mpich cannot be declared by prefix: the Cray PE wrappers cc/CC/ftn provide it",
                          hint="load PrgEnv-* and cray-mpich before sitedist runs and use 'mpi: probe'")
    found = _find_mpis(runner, [bindir])
    matching = [m for m in found if m.name == name]
    if found and not matching:
        have = ", ".join(f"{m.name} {m.version}" for m in found)
        raise HostError(f"declared MPI {name}: {prefix}/bin has {have}, not {name}; fix the name or the prefix")
    return _pick_declared("MPI", name, prefix, version, matching, runner.problems)
