"""From a site config's ``host:`` and ``toolchains:`` and a probe of the machine to the host packages
and toolchains that builds use.

A host package (a vendor compiler or MPI) is never built. In the store it gets a small prefix whose
``bin/`` holds links to its drivers under their usual names (so that ``mpicc`` means Open MPI in a
build or module that uses Open MPI, although Debian names it ``mpicc.openmpi``); its id is the hash
of its probed identity (see admin_docs/host-packages.md), never of its paths.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from sitedist.core.hashing import PROTOCOL, artifact_id
from sitedist.core.trust import open_private, private_dir, write_private
from sitedist.core.versions import newest, version_key
from sitedist.errors import ConfigError, HostError

PROBE_ENV_PREFIXES = ("OMPI_", "MPICH_", "CRAY", "PE_", "I_MPI_", "MPI_")


@dataclass
class HostPackage:
    name: str            # module and store name: the compiler family or MPI implementation
    kind: str            # 'compiler' | 'mpi'
    version: str
    probed: object       # sitedist.host.probe.Compiler or MPI
    links: dict          # bin/<link name> -> absolute driver path
    build_env: dict      # variables builds see: CC, CXX, FC, F77 or MPICC, MPICXX, MPIFC
    description: str = ""

    @property
    def identity(self):
        return self.probed.identity()

    @property
    def aid(self):
        return artifact_id({"protocol": PROTOCOL, "kind": "host", "name": self.name, "identity": self.identity})


@dataclass
class Toolchain:
    name: str
    compiler: HostPackage
    mpi: Optional[HostPackage] = None
    default: bool = False
    where: str = ""
    cuda: Optional[HostPackage] = None

    def identity(self):
        out = {"compiler": self.compiler.identity, "mpi": self.mpi.identity if self.mpi else None}
        if self.cuda is not None:
            out["cuda"] = self.cuda.identity
        return out

    def host_packages(self):
        return [p for p in (self.compiler, self.mpi, self.cuda) if p is not None]


@dataclass
class Host:
    packages: dict = field(default_factory=dict)   # name -> HostPackage
    toolchains: dict = field(default_factory=dict)  # name -> Toolchain ('default' always present)
    problems: list = field(default_factory=list)
    tools: dict = field(default_factory=dict)       # tool name -> [HostPackage] found, preferred first
    search_dirs: tuple = ()                         # where tools were looked for (PATH, then host.paths)
    timeout: float = 10.0
    pythons: list = field(default_factory=list)     # [HostPackage] of kind 'python', preferred first

    def find_tool(self, name):
        """The host installations of build tool ``name``, preferred first; a tool the probe does not
        know by name (a recipe may name any tool) is looked for now, by ``NAME --version``."""
        if name not in self.tools:
            from sitedist.host import probe, tools

            runner = probe._Runner(list(self.search_dirs), self.timeout, self.problems)
            found = sorted(tools.probe_tool(runner, name, self.search_dirs),
                           key=lambda t: version_key(t.version), reverse=True)
            self.tools[name] = [tool_package(t) for t in found]
        return self.tools[name]


def _compiler_package(c):
    links, env = {}, {}
    names = {"gcc": ("gcc", "g++", "gfortran"), "clang": ("clang", "clang++", "flang"),
             "intel": ("icx", "icpx", "ifx"), "nvhpc": ("nvc", "nvc++", "nvfortran"),
             "aocc": ("amdclang", "amdclang++", "amdflang"), "cray": ("cc", "CC", "ftn")}
    own = names.get(c.name, (c.name, c.name + "++", c.name + "-fortran"))
    for driver, own_name, generic, var in ((c.cc, own[0], "cc", "CC"), (c.cxx, own[1], "c++", "CXX"),
                                           (c.fc, own[2], "f95", "FC")):
        if driver:
            links[own_name] = driver
            links.setdefault(generic, driver)
            env[var] = driver
    if c.fc:
        env["F77"] = c.fc
    return HostPackage(name=c.name, kind="compiler", version=c.version, probed=c, links=links, build_env=env,
                       description=f"{c.name} {c.version} compilers ({', '.join(c.languages)}) of the host")


def _mpi_package(m):
    links, env = {}, {}
    for driver, link_names, var in ((m.mpicc, ("mpicc",), "MPICC"), (m.mpicxx, ("mpicxx", "mpic++"), "MPICXX"),
                                    (m.mpifc, ("mpifort", "mpif90", "mpif77"), "MPIFC"),
                                    (m.mpirun, ("mpirun", "mpiexec"), None)):
        if driver:
            for link in link_names:
                links[link] = driver
            if var:
                env[var] = driver
    if m.mpifc:
        env["MPIF77"] = m.mpifc
    return HostPackage(name=m.name, kind="mpi", version=m.version, probed=m, links=links, build_env=env,
                       description=f"{m.name} {m.version} MPI of the host (wraps {m.wraps})")


def tool_package(t):
    return HostPackage(name=t.name, kind="tool", version=t.version, probed=t, links=dict(t.executables),
                       build_env={}, description=f"{t.name} {t.version} of the host ({t.executables[0][1]})")


def python_package(p):
    """The host package of a host Python: its store prefix is a virtual environment over the interpreter
    (build/python.py makes it), which is what Python packages are built with and what their modules load."""
    return HostPackage(name="python", kind="python", version=p.version, probed=p, links={}, build_env={},
                       description=f"Python {p.version} of the host ({p.implementation}, {p.executable})")


def cuda_package(c):
    env = {"CUDA_HOME": c.prefix, "CUDA_PATH": c.prefix, "CUDAToolkit_ROOT": c.prefix, "CUDACXX": c.nvcc}
    return HostPackage(name=c.name, kind="cuda", version=c.version, probed=c, links=dict(c.executables),
                       build_env=env, description=f"CUDA toolkit {c.version} of the host (nvcc, CUDA_HOME)")


def _split(spec):
    name, _, version = spec.partition("@")
    return name, version or None


def _probe_cache_key(extra_dirs, path):
    """Probing runs compilers; its result is reused while PATH and its directories are unchanged."""
    from sitedist import __version__

    h = hashlib.sha256(f"{__version__}\0{path}\0{extra_dirs}".encode())
    # Variables that change what a wrapper wraps or reports (OMPI_CC, MPICH_CC, CRAYPE_*, I_MPI_*...).
    for var in sorted(os.environ):
        if var.startswith(PROBE_ENV_PREFIXES):
            h.update(f"{var}={os.environ[var]}\0".encode())
    for d in list(extra_dirs) + path.split(os.pathsep):
        try:
            st = os.stat(d)
            h.update(f"{d}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
        except OSError:
            h.update(f"{d}\0-\0".encode())
    return h.hexdigest()[:32]


def probe_key(extra_dirs=()):
    """What a probe's result depends on (PATH, ``host.paths``, their directories' state, the variables
    wrappers read): the probe cache's key, also part of the plan cache's (spec.plan_cache)."""
    return _probe_cache_key(tuple(extra_dirs), os.environ.get("PATH", ""))


def probe_cached(cache_dir, extra_dirs=(), timeout=10.0, refresh=False):
    """``probe_host`` with a cache keyed by PATH and the state of its directories."""
    from sitedist.host import probe

    path = os.environ.get("PATH", "")
    key = _probe_cache_key(tuple(extra_dirs), path)
    # Only a cache no other user could have written (core.trust): a planted result would name their gcc.
    cache_dir = private_dir(cache_dir, "probe cache") if cache_dir else None
    cache_file = os.path.join(cache_dir, f"probe-{key}.json") if cache_dir else None
    if cache_file and not refresh and os.path.exists(cache_file):
        try:
            with open_private(cache_file, encoding="utf-8") as f:
                return probe.ProbeReport.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    report = probe.probe_host(extra_dirs=tuple(extra_dirs), path=path, timeout=timeout)
    if cache_file:
        try:
            write_private(cache_file, json.dumps(report.to_json()).encode("utf-8"))
        except OSError:
            pass
    return report


def resolve_host(config, report):
    """The host packages a config uses: probed ones (filtered and pinned) and declared ones."""
    from sitedist.host import probe

    host_cfg = config.host
    timeout = host_cfg.get("timeout", 10.0)
    packages = {}

    def wanted(kind_key, name):
        sel = host_cfg.get(kind_key, "probe")
        if sel == "none":
            return False
        return sel == "probe" or name in [_split(s)[0] for s in sel]

    for c in sorted(report.compilers, key=lambda c: version_key(c.version), reverse=True):
        if wanted("compilers", c.name) and c.name not in packages:
            packages[c.name] = _compiler_package(c)
        elif wanted("compilers", c.name):
            packages.setdefault(f"{c.name}@{c.version}", _compiler_package(c))
    for m in report.mpis:
        if wanted("mpi", m.name) and m.name not in packages:
            packages[m.name] = _mpi_package(m)
    for c in sorted(report.cuda, key=lambda c: version_key(c.version), reverse=True):
        packages.setdefault("cuda" if "cuda" not in packages else f"cuda@{c.version}", cuda_package(c))

    for name, decl in (host_cfg.get("packages") or {}).items():
        where = config.where("host", "packages", name)
        pin = str(decl["version"]) if "version" in decl else None
        if _is_python(name, decl):
            continue  # the host Python: resolve_pythons
        if _is_tool(name, decl) and "prefix" not in decl:
            continue  # a pin on a probed build tool: applied by resolve_tools
        if "prefix" in decl:
            kind = decl.get("kind")
            if kind not in ("compiler", "mpi", "tool", "cuda"):
                raise ConfigError(f"host package {name}: a declared host package needs 'kind:' compiler, mpi, "
                                  f"tool, cuda or python", where=where)
            impl = decl.get("implementation", name) if kind != "tool" else name
            try:
                if kind == "compiler":
                    pkg = _compiler_package(probe.probe_declared_compiler(impl, decl["prefix"], pin, timeout))
                elif kind == "mpi":
                    pkg = _mpi_package(probe.probe_declared_mpi(impl, decl["prefix"], pin, timeout))
                elif kind == "tool":
                    pkg = tool_package(_declared_tool(impl, decl["prefix"], pin, timeout))
                else:
                    pkg = cuda_package(_declared_cuda(decl["prefix"], pin, timeout))
            except (HostError, ConfigError) as exc:
                raise type(exc)(f"{where}: host package {name}: {exc}") from None
            pkg.name = name
            packages[name] = pkg
            continue
        found = [p for key, p in packages.items() if p.name == name]
        if not found:
            raise HostError(f"{where}: host package {name} is pinned but was not found on this machine; "
                            f"found: {', '.join(sorted(packages)) or 'nothing'}. Put its bin directory under "
                            f"'host: paths:' or declare it with 'prefix:'.")
        if pin is not None:
            matching = [p for p in found if probe.version_matches(pin, p.version)]
            if not matching:
                raise HostError(f"{where}: host package {name}: the config pins version {pin} but this machine "
                                f"has {', '.join(p.version for p in found)}. Update the pin if the vendor "
                                f"stack was upgraded on purpose (every package built with it gets new hashes).")
            for key in [k for k, p in packages.items() if p.name == name]:
                del packages[key]
            packages[name] = matching[0]
    return packages


def _is_python(name, decl):
    return decl.get("kind") == "python" or (decl.get("kind") is None and name == "python")


def resolve_pythons(config, report):
    """The host Pythons Python packages may be built with, preferred first: the first python3 on PATH, then
    in host.paths; a declared one (``host: packages: python: {kind: python, prefix: DIR}``) is the only
    candidate; a pin (``host: packages: python: {version: "3.11"}``) keeps those that match."""
    from sitedist.host import probe
    from sitedist.host.python import probe_pythons

    found = list(report.pythons)
    for name, decl in (config.host.get("packages") or {}).items():
        if not _is_python(name, decl):
            continue
        where = config.where("host", "packages", name)
        pin = str(decl["version"]) if "version" in decl else None
        if "prefix" in decl:
            bindir = os.path.join(decl["prefix"], "bin")
            if not os.path.isdir(bindir):
                raise HostError(f"{where}: declared Python {name}: {bindir} does not exist; fix the prefix or "
                                f"install Python there")
            runner = probe._Runner([bindir] + os.environ.get("PATH", "").split(os.pathsep),
                                   config.host.get("timeout", 10.0))
            try:
                found = [probe._pick_declared("Python", name, decl["prefix"], pin, probe_pythons(runner, [bindir]),
                                              runner.problems)]
            except HostError as exc:
                raise HostError(f"{where}: {exc}") from None
        elif pin is not None:
            matching = [p for p in found if probe.version_matches(pin, p.version)]
            if not matching:
                raise HostError(f"{where}: host Python: the config pins version {pin} but this machine has "
                                f"{', '.join(f'{p.version} ({p.found})' for p in found) or 'no python3'} on PATH "
                                f"and in host.paths. Put the right one's bin directory under 'host: paths:' or "
                                f"declare it with {{kind: python, prefix: DIR}}.")
            found = matching
    return [python_package(p) for p in found]


def _is_tool(name, decl):
    from sitedist.host.tools import KNOWN_TOOLS

    return decl.get("kind") == "tool" or (decl.get("kind") is None and name in KNOWN_TOOLS)


def _declared_tool(name, prefix, pin, timeout):
    from sitedist.host import probe, tools

    bindir = probe._declared_bin("tool", name, prefix, (name,))
    runner = probe._Runner([bindir] + os.environ.get("PATH", "").split(os.pathsep), timeout)
    return probe._pick_declared("tool", name, prefix, pin, tools.probe_tool(runner, name, [bindir]),
                                runner.problems)


def _declared_cuda(prefix, pin, timeout):
    from sitedist.host import probe, tools

    bindir = probe._declared_bin("CUDA toolkit", "cuda", prefix, ("cuda",))
    runner = probe._Runner([bindir] + os.environ.get("PATH", "").split(os.pathsep), timeout)
    found = [t for t in (tools._toolkit(runner, os.path.join(bindir, "nvcc")),) if t is not None] \
        if os.path.isfile(os.path.join(bindir, "nvcc")) else []
    return probe._pick_declared("CUDA toolkit", "cuda", prefix, pin, found, runner.problems)


def resolve_tools(config, report, packages):
    """Build tools of the host: name -> [HostPackage], preferred first. A declared tool (``host:
    packages: NAME: {kind: tool, prefix: ...}``) is the only candidate for its name; probed ones are
    ordered newest first and filtered by a pin (``host: packages: cmake: {version: "3.28"}``)."""
    from sitedist.host import probe

    out = {}
    for t in sorted(report.tools, key=lambda t: version_key(t.version), reverse=True):
        out.setdefault(t.name, []).append(tool_package(t))
    for name, decl in (config.host.get("packages") or {}).items():
        if not _is_tool(name, decl):
            continue
        if "prefix" in decl:
            out[name] = [packages.pop(name)]
        elif "version" in decl:
            pin = str(decl["version"])
            found = out.get(name, [])
            matching = [p for p in found if probe.version_matches(pin, p.version)]
            if not matching:
                where = config.where("host", "packages", name)
                raise HostError(f"{where}: build tool {name}: the config pins version {pin} but this machine has "
                                f"{', '.join(p.version for p in found) or 'none'} on PATH and in host.paths. Put "
                                f"the right one's bin directory under 'host: paths:' or declare it with 'prefix:'.")
            out[name] = matching
    return out


def search_dirs(extra_dirs):
    """The directories a probe searches: PATH, then ``extra_dirs`` (host.paths), each once."""
    from sitedist.host.probe import _search_dirs

    return _search_dirs(tuple(extra_dirs), os.environ.get("PATH", ""), [])


def resolve_toolchains(config, packages):
    compilers = {k: p for k, p in packages.items() if p.kind == "compiler"}

    def pick(spec, kind, where):
        name, version = _split(spec)
        from sitedist.host import probe

        candidates = [p for p in packages.values()
                      if p.kind == kind and p.name == name and (version is None or probe.version_matches(version, p.version))]
        if not candidates:
            have = ", ".join(sorted(f"{p.name}@{p.version}" for p in packages.values() if p.kind == kind)) or "none"
            raise ConfigError(f"no host {kind} '{spec}' (this machine has: {have})", where=where,
                              hint="check the name, or declare it under 'host: packages:' with its prefix" + (
                                  "; sitedist looked for nvcc on PATH, in 'host: paths:' and in "
                                  "/usr/local/cuda*/bin (declare one with {kind: cuda, prefix: DIR})"
                                  if kind == "cuda" else ""))
        return newest(candidates, key=lambda p: p.version)

    toolchains = {}
    default_spec = config.host.get("default_compiler")
    if default_spec:
        default_compiler = pick(default_spec, "compiler", config.where("host", "default_compiler"))
    else:
        gcc = [p for p in compilers.values() if p.name == "gcc"]
        default_compiler = (newest(gcc, key=lambda p: p.version) if gcc
                            else next(iter(compilers.values()), None))
    for name, tc in config.toolchains.items():
        where = config.where("toolchains", name)
        compiler = pick(tc["compiler"], "compiler", where)
        mpi = pick(tc["mpi"], "mpi", where) if tc.get("mpi") else None
        cuda = pick(tc["cuda"], "cuda", where) if tc.get("cuda") else None
        toolchains[name] = Toolchain(name=name, compiler=compiler, mpi=mpi, where=where, cuda=cuda)
    if "default" not in toolchains:
        if default_compiler is None:
            toolchains["default"] = None
        else:
            toolchains["default"] = Toolchain(name="default", compiler=default_compiler, default=True)
    return toolchains
