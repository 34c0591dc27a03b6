"""The store: one directory of immutable, hash-named artifacts, plus sitedist's own state.

Layout (see admin_docs/store.md)::

    <root>/<name>/<version>-<id>/          an artifact (its own --prefix)
        .sitedist/spec.json                the build spec that was hashed, plus facts about the build
        .sitedist/build.log.gz             the build log
        .sitedist/manifest.json            every file with its sha256, mode or link target
        .sitedist/complete                 written last, by rename: the artifact is complete
    <root>/.sitedist/store.json            store format version
    <root>/.sitedist/src/<sha256>/<file>   source cache, keyed by checksum
    <root>/.sitedist/build/<name>-<version>-<id>/   build directories (kept when a build fails)
    <root>/.sitedist/locks/                lock files
    <root>/.sitedist/gcroots/              registered GC roots
    <root>/.sitedist/gcroots/trees/        module trees, profiles and develop environments using the store
    <root>/.sitedist/trash/                what gc and verify --repair are removing
    <root>/.sitedist/reports/              sync reports

An artifact directory without ``.sitedist/complete`` is never used: it is a build that was interrupted,
and is removed (under the artifact's lock) before the next build of it. Readers take no lock.
"""

import grp
import gzip
import json
import os
import re
import shutil
import socket
import stat
import time

from sitedist.core.durable import flush_tree, fsync_dir, fsync_file, write_atomic
from sitedist.core.hashing import ID_LENGTH, file_sha256
from sitedist.core.names import NAME, VERSION
from sitedist.errors import StoreError

FORMAT = 1
META = ".sitedist"
PADDING = "__sitedist_padding__"  # the directory names of a padded store root (store.padded_length)
MARKER = "complete"
SUBDIRS = ("bin", "sbin", "lib", "lib64", "include", "share/man", "man", "share/info", "lib/pkgconfig",
           "lib64/pkgconfig", "share/pkgconfig", "lib/cmake", "lib64/cmake", "share/aclocal",
           "share/cmake")


def python_site_dirs(prefix):
    """The ``lib/pythonX.Y/site-packages`` directories of a prefix, relative to it (a Python package's
    module adds the prefix to SITEDIST_PYTHONPREFIXES for them: admin_docs/python.md)."""
    try:
        names = sorted(os.listdir(os.path.join(prefix, "lib")))
    except OSError:
        return []
    return [f"lib/{n}/site-packages" for n in names
            if re.fullmatch(r"python\d+\.\d+", n) and os.path.isdir(os.path.join(prefix, "lib", n, "site-packages"))]


def make_writable(path):
    """Give the owner write access to a tree again (finished artifacts are read-only)."""
    for dirpath, dirnames, filenames in os.walk(path):
        try:
            os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
        except OSError:
            pass


def remove_tree(path):
    """Remove a directory tree even if it was made read-only."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    make_writable(path)
    shutil.rmtree(path)


class Store:
    """A store at ``root``. ``upstreams`` are other stores consulted read-only, in order."""

    def __init__(self, root, upstreams=(), group=None, build_dir=None):
        self.root = os.path.abspath(root)
        self.upstreams = [Store(u) for u in upstreams]
        self.group = group
        self.meta = os.path.join(self.root, META)
        self.src_dir = os.path.join(self.meta, "src")
        self.build_root = build_dir or os.path.join(self.meta, "build")
        self.lock_dir = os.path.join(self.meta, "locks")
        self.gcroots_dir = os.path.join(self.meta, "gcroots")
        self.trees_dir = os.path.join(self.gcroots_dir, "trees")
        self.trash_dir = os.path.join(self.meta, "trash")
        self.reports_dir = os.path.join(self.meta, "reports")
        self.tmp_dir = os.path.join(self.meta, "tmp")

    # --- paths ---------------------------------------------------------------------------------

    def prefix(self, name, version, aid):
        return os.path.join(self.root, name, f"{version}-{aid}")

    def lock_path(self, name, version, aid):
        return os.path.join(self.lock_dir, f"{name}-{version}-{aid}.lock")

    def build_path(self, name, version, aid):
        return os.path.join(self.build_root, f"{name}-{version}-{aid}")

    # --- state ---------------------------------------------------------------------------------

    @staticmethod
    def is_complete(prefix):
        return os.path.exists(os.path.join(prefix, META, MARKER))

    def find(self, name, version, aid):
        """The complete prefix of this artifact here or in an upstream, else None."""
        for store in [self] + self.upstreams:
            prefix = store.prefix(name, version, aid)
            if self.is_complete(prefix):
                return prefix
        return None

    def state(self, name, version, aid):
        """'complete', 'upstream', 'incomplete' (an interrupted build) or 'missing'."""
        prefix = self.prefix(name, version, aid)
        if self.is_complete(prefix):
            return "complete"
        if any(self.is_complete(u.prefix(name, version, aid)) for u in self.upstreams):
            return "upstream"
        return "incomplete" if os.path.lexists(prefix) else "missing"

    def artifacts(self):
        """Every artifact directory here: (name, version, id, prefix, complete). Only entries named as
        sitedist names artifacts count (``<name>/<version>-<id>``, with the schema's name and version
        patterns and a base32 id): whatever else lies in the store's directory is not sitedist's."""
        if not os.path.isdir(self.root):
            return
        for name in sorted(os.listdir(self.root)):
            pkg_dir = os.path.join(self.root, name)
            if not re.fullmatch(NAME, name) or not os.path.isdir(pkg_dir) or os.path.islink(pkg_dir):
                continue
            for entry in sorted(os.listdir(pkg_dir)):
                version, _, aid = entry.rpartition("-")
                if not (re.fullmatch(VERSION, version) and re.fullmatch(f"[a-z2-7]{{{ID_LENGTH}}}", aid)):
                    continue
                prefix = os.path.join(pkg_dir, entry)
                yield name, version, aid, prefix, self.is_complete(prefix)

    @staticmethod
    def read_spec(prefix):
        with open(os.path.join(prefix, META, "spec.json"), encoding="utf-8") as f:
            return json.load(f)

    @staticmethod
    def read_marker(prefix):
        with open(os.path.join(prefix, META, MARKER), encoding="utf-8") as f:
            return json.load(f)

    # --- writing -------------------------------------------------------------------------------

    def check_writable(self):
        """Fail early, before any work, when this user cannot write the store."""
        probe = self.root
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            raise StoreError(f"the store {self.root} cannot be created: {probe} is not a directory. "
                             f"Nothing was changed; check 'store:' in the config")
        target = self.meta if os.path.isdir(self.meta) else probe
        if not os.access(target, os.W_OK | os.X_OK):
            raise StoreError(
                f"permission denied: cannot write the store at {self.root} (as user "
                f"{_user()}). Nothing was changed.\n  hint: to build your own packages on top of this "
                f"store, use your own 'store:' (e.g. ~/.sitedist/store) and list {self.root} under "
                f"'upstreams:'; see admin_docs/user-stacks.md")

    def init(self):
        """Create the store (or check its format) and its shared directories, with the store group's
        permissions; call before writing anything into the store."""
        self.check_writable()
        if self._gid() is not None:
            # Everything this process writes into a group store (lock files and their holder info,
            # reports, the source cache, build directories) must be usable by the other admins of
            # the group, whatever this admin's umask.
            os.umask(os.umask(0) & ~0o070)
        for d in (self.root, self.meta, self.src_dir, self.build_root, self.lock_dir, self.gcroots_dir,
                  self.trees_dir, self.reports_dir, self.tmp_dir, self.trash_dir):
            self._mkdir(d, shared=True)
        info = os.path.join(self.meta, "store.json")
        if not os.path.exists(info):
            self.write_json_atomic(info, {"format": FORMAT, "created": time.time()})
        else:
            self.check_is_store()

    def check_is_store(self):
        """StoreError unless ``root`` is a sitedist store of this format: whatever sweeps the store (gc,
        verify) calls this first, so that a 'store:' naming some other directory loses nothing."""
        info = os.path.join(self.meta, "store.json")
        try:
            with open(info, encoding="utf-8") as f:
                fmt = json.load(f).get("format")
        except FileNotFoundError:
            raise StoreError(f"{self.root} is not a sitedist store (no {META}/store.json); nothing was removed. "
                             f"Check 'store:' in the config") from None
        except (OSError, ValueError, AttributeError) as exc:
            raise StoreError(f"{info} is unreadable ({exc}), so {self.root} is not known to be a sitedist "
                             f"store; nothing was removed") from None
        if fmt != FORMAT:
            raise StoreError(f"{self.root} is a store of format {fmt}; this sitedist knows format {FORMAT}")

    def _gid(self):
        if not self.group:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise StoreError(f"store.group: no such group '{self.group}'") from None

    def _mkdir(self, path, shared=False):
        """mkdir -p; new directories are world-readable; with a store group they get the group, setgid,
        and (shared ones) g+w."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._mkdir(parent, shared)
        try:
            os.mkdir(path)
        except FileExistsError:
            return
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from None
        # Readable by everyone, as sealed artifacts are, whatever the umask: users reach the artifacts
        # through these directories. With a store group: its group, setgid, and (shared ones) g+w.
        mode = stat.S_IMODE(os.stat(path).st_mode) | 0o755
        gid = self._gid()
        if gid is not None and (path == self.root or path.startswith(self.root + os.sep)):
            os.chown(path, -1, gid)
            mode |= stat.S_ISGID | (stat.S_IWGRP if shared else 0)
        os.chmod(path, mode)

    def write_json_atomic(self, path, data):
        """Write the store's JSON (spec, manifest, marker, GC roots, history) by rename, flushed to disk first."""
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True), durable=True)

    def prepare_prefix(self, prefix):
        """Under the artifact's lock: remove what an interrupted build left, create the directory."""
        if os.path.lexists(prefix):
            remove_tree(prefix)
        self._mkdir(os.path.dirname(prefix), shared=True)
        self._mkdir(prefix)

    def complete(self, prefix, spec, log_path, extra=None, before_marker=None):
        """Seal an installed prefix: spec, compressed log, manifest, read-only, then the marker.
        ``before_marker()`` runs just before the marker is written (the builder removes its build
        directory there, so that no kill leaves a build directory behind a complete artifact)."""
        meta = os.path.join(prefix, META)
        os.makedirs(meta, exist_ok=True)
        self.write_json_atomic(os.path.join(meta, "spec.json"), spec)
        if log_path and os.path.exists(log_path):
            with open(log_path, "rb") as src, gzip.open(os.path.join(meta, "build.log.gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        manifest = build_manifest(prefix)   # flushes each file
        # Every directory's entries reach the disk before the manifest that lists them, so that after a
        # power cut a manifest (and the marker after it) never names a file whose entry was lost.
        flush_tree(prefix, files=False)
        self.write_json_atomic(os.path.join(meta, "manifest.json"), manifest)
        subdirs = [d for d in SUBDIRS if os.path.isdir(os.path.join(prefix, d))] + python_site_dirs(prefix)
        size = sum(e.get("size", 0) for e in manifest["files"].values())
        gid = self._gid()
        seal(prefix, gid)
        if before_marker is not None:
            before_marker()
        marker = {"id": spec.get("id"), "completed": time.time(), "host": socket.gethostname(),
                  "subdirs": subdirs, "files": len(manifest["files"]), "bytes": size, **(extra or {})}
        # The marker goes in last, by rename, into the read-only meta dir (opened for this step only).
        os.chmod(meta, 0o755 if gid is None else 0o2755)  # setgid kept: the marker gets the store's group
        self.write_json_atomic(os.path.join(meta, MARKER), marker)
        os.chmod(os.path.join(meta, MARKER), 0o444)
        os.chmod(meta, 0o555 if gid is None else 0o2555)
        fsync_dir(meta)
        return marker


def _user():
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def iter_files(prefix):
    """(relative path, path, lstat) of every file and symlink under ``prefix``, outside .sitedist/."""
    for dirpath, dirnames, filenames in os.walk(prefix):
        rel_dir = os.path.relpath(dirpath, prefix)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != META]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISREG(st.st_mode):
                yield os.path.normpath(os.path.join(rel_dir, name)), path, st


def manifest_entry(path, st):
    """What the manifest records of one file: its link target, or sha256, mode and size."""
    if stat.S_ISLNK(st.st_mode):
        return {"link": os.readlink(path)}
    return {"sha256": file_sha256(path), "mode": oct(stat.S_IMODE(st.st_mode) & 0o777), "size": st.st_size}


def build_manifest(prefix):
    """Every file under ``prefix`` (outside .sitedist/): sha256 and mode, or the link target; each
    file is flushed to disk."""
    files = {}
    for rel, path, st in iter_files(prefix):
        files[rel] = manifest_entry(path, st)
        if "sha256" in files[rel]:
            fsync_file(path)
    return {"format": 1, "files": files}


def seal(prefix, gid=None):
    """Make an artifact read-only for everyone (owner included); with a group, owned by it."""
    for dirpath, dirnames, filenames in os.walk(prefix, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if gid is not None:
                    os.lchown(path, -1, gid)
                continue
            if gid is not None:
                os.chown(path, -1, gid)
            mode = stat.S_IMODE(st.st_mode) & ~0o222
            if stat.S_ISDIR(st.st_mode):
                mode |= 0o555
            else:
                mode |= 0o444
                if st.st_mode & 0o111:
                    mode |= 0o555
            os.chmod(path, mode & ~(stat.S_ISUID | stat.S_ISGID) | (stat.S_ISGID if gid is not None and stat.S_ISDIR(st.st_mode) else 0))
    if gid is not None:
        os.chown(prefix, -1, gid)
    os.chmod(prefix, 0o555 | (stat.S_ISGID if gid is not None else 0))
