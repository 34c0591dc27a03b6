"""Post-build link checks: what an artifact's ELF files load at run time (admin_docs/recipes.md,
"What a build may link").

After the RUNPATHs are completed, every ``DT_NEEDED`` of every ELF file in the prefix is resolved the
way the dynamic loader does it (``DT_RPATH`` or ``DT_RUNPATH`` with ``$ORIGIN``, then the loader's
cache and default directories; ``LD_LIBRARY_PATH`` plays no part: builds and users must not need it).
The build fails, naming the file and the library, when a needed library

- is found nowhere;
- resolves outside the stores and the host (its loader directories and its compiler, MPI and CUDA
  packages);
- resolves to a host library of a package this plan builds itself (a system ``libhdf5``,
  ``libopenblas``, ``libz`` while the store has those): the build found the system's copy instead of
  the store's, usually for want of a ``depends: link`` entry;
- is the MPI library of another MPI than the build's toolchain's (``libmpich.so.12`` in an Open MPI
  build), or of any MPI in a build whose toolchain has none. The MPI libraries are the sonames that
  the probe read from each MPI's wrappers (``sitedist probe``, LIBRARIES) that are the MPI's own
  (``libmpi*``, ``libpmpi*``, ``libopen-rte``/``libopen-pal``), not the helpers the wrappers link too
  (``libz``, ``libhwloc``).
"""

import os
import re
import subprocess

from sitedist.errors import BuildError
from sitedist.host.probe import elf_dynamic

# Loaded from the GPU driver at run time, which a build machine need not have installed.
DRIVER_LIBRARIES = frozenset({"libcuda.so.1", "libnvidia-ml.so.1", "libnvcuvid.so.1"})
DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
MAX_REPORTED = 10
MPI_LIBRARY = re.compile(r"lib(p?mpi|open-rte|open-pal|oshmem)")   # libmpi*, libmpich*, libmpifort, libpmpi...


def library_stem(soname):
    """'hdf5' for libhdf5_serial.so.103 and libhdf5.so.103, 'fftw3' for libfftw3_mpi.so.3."""
    base = re.sub(r"\.so(\.[0-9][0-9.]*)?\Z", "", os.path.basename(soname))
    base = base[3:] if base.startswith("lib") else base
    return re.split(r"[_-]", base, maxsplit=1)[0].lower()


def _unversioned(stem):
    return re.sub(r"[0-9.]+\Z", "", stem)


def name_stem(package):
    """The library stem a package name suggests, without trailing digits: 'netcdf' for netcdf-c,
    'fftw' for fftw, 'png' for libpng, 'z' for zlib; None for Python packages (py-*), which provide no libraries."""
    if package.startswith("py-"):
        return None
    name = package.lower()
    name = name[3:] if name.startswith("lib") and len(name) > 3 else name
    name = name[:-3] if name.endswith("lib") and len(name) > 3 else name   # zlib: libz
    stem = _unversioned(re.split(r"[_-]", name, maxsplit=1)[0])
    return stem or None


def system_libraries():
    """soname -> [paths] of the dynamic loader's cache (``ldconfig -p``); every word size (the loader
    skips a library of another machine, and so does ``_resolve``)."""
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        found = {}
        for line in out.splitlines():
            m = re.match(r"\s+(\S+) \([^)]*\) => (\S+)\Z", line)
            if m:
                found.setdefault(m.group(1), []).append(m.group(2))
        return found
    return {}


class LinkPolicy:
    """What the builds of one plan may link. ``plan_packages``: (name, prefix) of every package of the
    plan; ``host_prefixes``: the prefixes (and library directories) of the host's compilers, MPIs and
    CUDA toolkits; ``mpi_libraries``: MPI name -> the sonames of its libraries (from the probe)."""

    def __init__(self, store_roots, plan_packages=(), host_prefixes=(), mpi_libraries=None):
        self.store_roots = [os.path.realpath(r) for r in store_roots]
        self.plan_packages = list(plan_packages)
        self.host_prefixes = [os.path.realpath(p) for p in host_prefixes if p and p != "/" and p != "/usr"]
        # The probe lists every library a wrapper links, Open MPI's helpers too (libz, libhwloc):
        # only the MPI's own libraries tell one MPI from another.
        self.mpi_libraries = {k: frozenset(s for s in v if MPI_LIBRARY.match(s))
                              for k, v in (mpi_libraries or {}).items()}
        self._system = None
        self._host_dirs = set()

    @property
    def system(self):
        if self._system is None:
            self._system = system_libraries()
            self._host_dirs = {os.path.realpath(os.path.dirname(p)) for paths in self._system.values()
                               for p in paths} | {os.path.realpath(d) for d in DEFAULT_DIRS}
        return self._system

    def in_store(self, path):
        return any(path == r or path.startswith(r + os.sep) for r in self.store_roots)

    def in_host(self, path):
        """In the loader's directories, or in a host compiler's, MPI's or CUDA toolkit's prefix."""
        self.system  # noqa: B018 (fills _host_dirs)
        return os.path.dirname(path) in self._host_dirs or \
            any(path.startswith(p + os.sep) for p in self.host_prefixes)

    def built_stems(self, exclude_prefix):
        """Library stems the plan's packages provide: of the libraries in the lib directories of those
        already in the store, and as their names suggest them (unversioned)."""
        exact, by_name = {}, {}
        for name, prefix in self.plan_packages:
            stem = name_stem(name)
            if stem:
                by_name.setdefault(stem, name)
            if prefix == exclude_prefix:
                continue
            for sub in ("lib", "lib64"):
                try:
                    entries = os.listdir(os.path.join(prefix, sub))
                except OSError:
                    continue
                for entry in entries:
                    if re.search(r"\.so(\.[0-9.]+)?\Z", entry):
                        exact.setdefault(library_stem(entry), name)
        return exact, by_name


def _loadable(path, machine):
    found = elf_dynamic(path)
    # A library without a dynamic section (rare: a static shared object) is taken as it is.
    return found is None or found["machine"] == machine


def _resolve(soname, elf, found, system):
    """The path the loader would load ``soname`` from for ``elf``, or None."""
    if "/" in soname:
        return os.path.realpath(soname) if os.path.exists(soname) else None
    origin = os.path.dirname(os.path.realpath(elf))
    dirs = found["runpath"] or found["rpath"]   # DT_RPATH counts only without DT_RUNPATH
    candidates = [os.path.join(d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin), soname) for d in dirs]
    candidates += system.get(soname, []) + [os.path.join(d, soname) for d in DEFAULT_DIRS]
    for candidate in candidates:
        if os.path.exists(candidate) and _loadable(candidate, found["machine"]):
            return os.path.realpath(candidate)
    return None


def _elf_files(prefix):
    for dirpath, dirnames, filenames in os.walk(prefix):
        dirnames[:] = sorted(d for d in dirnames if d != ".sitedist")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not os.path.islink(path) and os.path.isfile(path):
                yield path


def check_links(prefix, node, policy, log):
    """Fail (BuildError naming each file and library) when an ELF file of ``prefix`` loads a library
    it must not; see the module's docstring. ``node``: the plan node built into ``prefix``."""
    toolchain = node.toolchain
    own_mpi = toolchain.mpi.name if toolchain is not None and toolchain.mpi is not None else None
    own_mpi_libs = policy.mpi_libraries.get(own_mpi, frozenset()) if own_mpi else frozenset()
    foreign_mpi = {}
    for mpi, sonames in sorted(policy.mpi_libraries.items()):
        if mpi != own_mpi:
            for soname in sonames - own_mpi_libs:
                foreign_mpi.setdefault(soname, mpi)
    exact, by_name = policy.built_stems(prefix)
    tc_label = toolchain.name if toolchain is not None and not getattr(toolchain, "default", False) else "default"
    problems = []
    checked = 0
    for path in _elf_files(prefix):
        found = elf_dynamic(path)
        if not found or not found["needed"]:
            continue
        checked += 1
        rel = os.path.relpath(path, prefix)
        for soname in found["needed"]:
            if soname in foreign_mpi:
                mpi = foreign_mpi[soname]
                if own_mpi:
                    problems.append(f"{rel} links {soname}, the MPI library of {mpi}, but it is built with "
                                    f"toolchain {tc_label}, whose MPI is {own_mpi}: its build used another "
                                    f"MPI's compiler wrapper or library (use $MPICC/mpicc of the toolchain)")
                else:
                    problems.append(f"{rel} links {soname}, the MPI library of {mpi}, but it is built with "
                                    f"toolchain {tc_label}, which has no MPI: build it with a toolchain "
                                    f"that has {mpi} ('toolchains:' of the package in the config)")
                continue
            resolved = _resolve(soname, path, found, policy.system)
            if resolved is None:
                if soname not in DRIVER_LIBRARIES:
                    problems.append(f"{rel} needs {soname}, which is found neither in the store (its RUNPATH: "
                                    f"{':'.join(found['runpath'] or found['rpath']) or 'none'}) nor on the "
                                    f"host: add the package that provides it to the recipe's 'depends: link'")
                continue
            if policy.in_store(resolved):
                continue
            stem = library_stem(soname)
            owner = exact.get(stem) or by_name.get(_unversioned(stem))
            if owner is not None and owner != node.name:
                problems.append(f"{rel} links {resolved}, the host's {soname}, but this plan builds {owner}: "
                                f"add {owner} to the recipe's 'depends: link' so that the build finds the "
                                f"store's (and make its build system look there)")
            elif not policy.in_host(resolved):
                problems.append(f"{rel} links {resolved}, which is neither in the store nor in the host's "
                                f"library directories: the build picked up a library from elsewhere")
    log.write(f"sitedist: link check: {checked} ELF files with dynamic dependencies, "
              f"{len(problems)} problem(s)\n")
    if problems:
        shown = problems[:MAX_REPORTED]
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more (the log lists them all)" \
            if len(problems) > MAX_REPORTED else ""
        for p in problems:
            log.write(f"sitedist: link check: {p}\n")
        raise BuildError("link check failed:\n  " + "\n  ".join(shown) + more)
