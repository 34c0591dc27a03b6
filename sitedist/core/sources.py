"""Sources: fetch into the store's cache (keyed by sha256), verify, and unpack safely.

A URL source is looked for, in order, in the cache, in each mirror (a directory or URL; a mirror that
publishes a ``SHA256SUMS`` index is searched by checksum, so file names need not match), and at its
own URL. Every download is checked against the recipe's sha256 before it enters the cache; the cache
is written by rename, so a killed download leaves nothing behind that could be taken for a source.

Git sources are pinned to a commit; directory sources are hashed by content.
"""

import os
import shutil
import stat
import subprocess
import tarfile
import time
import urllib.parse
import zipfile

from sitedist.core.hashing import file_sha256, tree_sha256
from sitedist.core.locks import StoreLock
from sitedist.errors import ChecksumError, SourceError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


SCHEMES = ("http", "https", "file")


def source_filename(source):
    given = source.get("filename")
    name = given or os.path.basename(urllib.parse.urlparse(source.get("url", "")).path)
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        if given:
            raise SourceError(f"filename {given!r} must be a plain file name (no '/', not '..')")
        raise SourceError(f"cannot tell a file name from {source.get('url')!r}; set 'filename:' in the recipe")
    return name


def source_identity(source):
    """What of a source enters the build hash (never its URL or location)."""
    if "sha256" in source:
        source_filename(source)  # checked when planning, not first when fetching
        scheme = urllib.parse.urlparse(source.get("url", "")).scheme
        if source.get("url") and scheme not in SCHEMES:
            raise SourceError(f"{source['url']}: unsupported URL scheme '{scheme}' (use http, https or file)")
        return {"sha256": source["sha256"]}
    if "git" in source:
        return {"git_commit": source["commit"]}
    if not os.path.isdir(source["path"]):
        raise SourceError(f"source directory not found: {source['path']}")
    return {"tree_sha256": tree_sha256(source["path"])}


class Fetcher:
    """Fetches sources into ``cache_dir``. ``lock_dir`` holds the locks of git mirrors (default: the
    cache directory); a store passes its lock directory."""

    def __init__(self, cache_dir, mirrors=(), timeout=60, lock_dir=None, upstream_caches=()):
        self.cache_dir = cache_dir
        self.mirrors = list(mirrors)
        self.timeout = timeout
        self.lock_dir = lock_dir or cache_dir
        self.upstream_caches = list(upstream_caches)  # other stores' source caches, only ever read
        self._indexes = {}

    def cached(self, source):
        """A verified copy of the source: in this store's cache, else in an upstream store's. An upstream's
        copy is checked against the sha256 again: this store does not control who writes there."""
        for cache in [self.cache_dir] + self.upstream_caches:
            path = os.path.join(cache, source["sha256"], source_filename(source))
            if os.path.isfile(path) and (cache == self.cache_dir or file_sha256(path) == source["sha256"]):
                return path
        return None

    # --- mirror indexes ----------------------------------------------------------------------

    def _index(self, mirror):
        if mirror not in self._indexes:
            index = {}
            text = None
            if "://" not in mirror:
                path = os.path.join(mirror, "SHA256SUMS")
                if os.path.isfile(path):
                    with open(path, encoding="utf-8", errors="replace") as f:
                        text = f.read()
            else:
                import urllib.request

                try:
                    with urllib.request.urlopen(mirror.rstrip("/") + "/SHA256SUMS", timeout=self.timeout) as r:
                        text = r.read().decode("utf-8", "replace")
                except (OSError, ValueError):  # URLError is an OSError
                    text = None
            for line in (text or "").splitlines():
                parts = line.split(None, 1)
                if len(parts) == 2 and len(parts[0]) == 64:
                    name = parts[1].strip().lstrip("*")
                    if "/" not in name and name not in (".", ".."):
                        index[parts[0].lower()] = name
            self._indexes[mirror] = index
        return self._indexes[mirror]

    def _candidates(self, source):
        sha, name = source["sha256"], source_filename(source)
        for mirror in self.mirrors:
            listed = self._index(mirror).get(sha)
            for filename in ([listed] if listed else []) + ([name] if name != listed else []):
                if "://" in mirror:
                    yield mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
                else:
                    path = os.path.join(mirror, filename)
                    if os.path.isfile(path):
                        yield "file://" + urllib.parse.quote(os.path.abspath(path))
        if source.get("url"):
            yield source["url"]

    # --- fetching ----------------------------------------------------------------------------

    def fetch(self, source, where=None):
        """Return the cached path of a verified url source, fetching it if needed."""
        hit = self.cached(source)
        if hit:
            return hit
        sha = source["sha256"]
        errors = []
        for url in self._candidates(source):
            try:
                return self._download(url, source)
            except ChecksumError:
                raise
            except SourceError as exc:
                errors.append(str(exc))
        tried = "\n    ".join(errors)
        raise SourceError(
            f"cannot fetch {source_filename(source)} (sha256 {sha}){' for ' + where if where else ''}; tried:"
            f"\n    {tried}\n  hint: put the file in a mirror directory listed under 'mirrors:' "
            f"(with a SHA256SUMS index or under its own name)")

    def _download(self, url, source):
        import hashlib
        import urllib.request

        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in SCHEMES:
            raise SourceError(f"{url}: unsupported URL scheme '{parsed.scheme}' (use http, https or file)")
        final_dir = os.path.join(self.cache_dir, source["sha256"])
        os.makedirs(final_dir, exist_ok=True)
        final = os.path.join(final_dir, source_filename(source))
        tmp = f"{final}.part-{os.getpid()}-{time.monotonic_ns()}"
        h = hashlib.sha256()
        try:
            if parsed.scheme == "file":
                local = urllib.parse.unquote(parsed.path)
                if not os.path.isfile(local):
                    raise SourceError(f"{url}: no such file")
                reader = open(local, "rb")
            else:
                reader = urllib.request.urlopen(url, timeout=self.timeout)
            with reader as r, open(tmp, "wb") as out:
                while True:
                    chunk = r.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            _unlink(tmp)
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise SourceError(f"{url}: {reason}") from None
        except BaseException:
            _unlink(tmp)
            raise
        actual = h.hexdigest()
        if actual != source["sha256"]:
            _unlink(tmp)
            raise ChecksumError(
                f"checksum mismatch for {url}\n    expected sha256 {source['sha256']}\n    actual   sha256 "
                f"{actual}\n  The download was discarded; nothing was built. If the upstream file really "
                f"changed, check why, then update 'sha256' in the recipe.")
        os.replace(tmp, final)
        return final

    def fetch_git(self, source, dest):
        """Export ``source['commit']`` of a git repository into ``dest``. The repository's mirror in the
        cache is cloned, fetched into and read under its own lock, so concurrent builds (threads or
        processes) of one git source take turns."""
        import hashlib

        key = "git-" + hashlib.sha256(source["git"].encode()).hexdigest()[:16]
        mirror = os.path.join(self.cache_dir, key)
        commit = source["commit"]

        def git(*args, cwd=None):
            proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                  env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
            if proc.returncode != 0:
                why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                raise SourceError(f"git {' '.join(args[:2])} failed for {source['git']}: {why}")
            return proc.stdout

        os.makedirs(self.cache_dir, exist_ok=True)
        os.makedirs(self.lock_dir, exist_ok=True)
        with StoreLock(os.path.join(self.lock_dir, key + ".lock"), what=f"fetching {source['git']}"):
            if not os.path.isdir(mirror):
                tmp = f"{mirror}.part-{os.getpid()}-{time.monotonic_ns()}"
                try:
                    git("clone", "--quiet", "--mirror", source["git"], tmp)
                    os.replace(tmp, mirror)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            try:
                git("cat-file", "-e", commit + "^{commit}", cwd=mirror)
            except SourceError:
                git("fetch", "--quiet", "origin", cwd=mirror)
                try:
                    git("cat-file", "-e", commit + "^{commit}", cwd=mirror)
                except SourceError:
                    raise SourceError(f"commit {commit} not found in {source['git']}") from None
            archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=mirror, capture_output=True)
        if archive.returncode != 0:
            raise SourceError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}")
        os.makedirs(dest, exist_ok=True)
        tar_path = os.path.join(dest, "..", "git-export.tar")
        with open(tar_path, "wb") as f:
            f.write(archive.stdout)
        unpack(tar_path, dest)
        os.unlink(tar_path)


def _unlink(path):
    """Remove a partial download, and its checksum directory if nothing else is in it."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass  # not empty (a cached file, another download), or gone


def unpack(archive, dest):
    """Unpack a tar or zip archive into ``dest``, checking every member before writing anything.

    Safe whatever the Python version (this never uses ``tarfile``'s extraction filters, which Python
    3.11.2 lacks and whose path resolution stops following symlinks past PATH_MAX, CVE-2025-4517): a
    member is refused when its path is absolute, has a ``..``, or passes through a symlink of the archive;
    when it is a symlink whose target, resolved through the archive's own symlinks, leaves ``dest``; when
    it is a hard link to anything but an earlier regular file of the archive; when it is a device or FIFO,
    or a file with the setuid or setgid bit. Modes lose setuid, setgid, sticky and group/other write, and
    nothing is given to the archive's owners. Symlinks are made last, and every directory on the way to a
    member is checked to be a real directory, so nothing is ever written through a link."""
    name = os.path.basename(archive)
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                _Unpacker(name, dest).run(_zip_members(z))
        else:
            with tarfile.open(archive) as tar:
                _Unpacker(name, dest).run(_tar_members(tar))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise SourceError(f"{name}: cannot unpack: {exc}") from None


class _Member:
    """One archive member, tar or zip alike: ``kind`` is file, dir, symlink, hardlink or other."""

    def __init__(self, name, kind, mode=0o644, mtime=None, link="", open=None, what=""):
        self.name, self.kind, self.mode, self.mtime = name, kind, mode, mtime
        self.link, self.open, self.what = link, open, what


def _tar_members(tar):
    for m in tar:  # reads headers one by one; the data of a member is read when it is written
        if m.isreg():
            yield _Member(m.name, "file", m.mode, m.mtime, open=lambda m=m: tar.extractfile(m))
        elif m.isdir():
            yield _Member(m.name, "dir", m.mode, m.mtime)
        elif m.issym():
            yield _Member(m.name, "symlink", m.mode, m.mtime, link=m.linkname)
        elif m.islnk():
            yield _Member(m.name, "hardlink", m.mode, m.mtime, link=m.linkname)
        else:
            yield _Member(m.name, "other", m.mode, what="a device or FIFO" if (m.isdev() or m.isfifo())
                          else f"of an unknown type ({m.type!r})")


def _zip_members(z):
    for info in z.infolist():
        unix = info.external_attr >> 16  # the mode, when the archive was made on a Unix system
        mtime = time.mktime(info.date_time + (0, 0, -1))
        fmt = stat.S_IFMT(unix)
        if info.is_dir() or fmt == stat.S_IFDIR:
            yield _Member(info.filename, "dir", unix & 0o7777 or 0o755, mtime)
        elif fmt == stat.S_IFLNK:
            yield _Member(info.filename, "symlink", 0o777, mtime, link=z.read(info).decode("utf-8", "replace"))
        elif fmt in (0, stat.S_IFREG):
            yield _Member(info.filename, "file", unix & 0o7777 or 0o644, mtime, open=lambda i=info: z.open(i))
        else:
            yield _Member(info.filename, "other", what="a device or FIFO" if fmt in (
                stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO) else f"of an unknown type ({fmt:o})")


def _parts(path):
    """The components of a member path inside the archive, or None when it is absolute or has '..'."""
    if path.startswith("/") or "\0" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def _resolve(parts, links):
    """Where ``parts`` (relative to the destination) leads once the archive's symlinks ``links`` (joined
    path -> target) are followed as the kernel would; None when it leaves the destination, goes through
    an absolute link or loops. Done on the member table, in memory, so no PATH_MAX limit applies."""
    todo, out, hops = list(parts), [], 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        target = links.get("/".join(out))
        if target is not None:
            hops += 1
            if hops > 40 or target.startswith("/"):
                return None
            out.pop()
            todo = target.split("/") + todo
    return out


class _Unpacker:
    def __init__(self, archive, dest):
        self.archive, self.dest = archive, dest

    def refuse(self, member, why):
        return SourceError(f"{self.archive}: refusing to unpack: member {member.name!r} {why} (nothing of the "
                           f"archive was used; an archive from a release should never contain this: check "
                           f"where it came from)")

    def check(self, members):
        """Every member checked against the whole table, before anything is written."""
        kinds, links = {}, {}
        for m in members:
            parts = _parts(m.name)
            if parts is None:
                why = "has an absolute path" if m.name.startswith("/") else "has a '..' component"
                raise self.refuse(m, f"{why}: it would land outside the build directory")
            m.parts, key = parts, "/".join(parts)
            if m.kind == "other":
                raise self.refuse(m, f"is {m.what}")
            if m.mode & 0o6000 and m.kind in ("file", "hardlink"):
                raise self.refuse(m, f"has the setuid or setgid bit (mode {m.mode & 0o7777:o})")
            for i in range(1, len(parts)):
                above = "/".join(parts[:i])
                if kinds.get(above) == "symlink":
                    raise self.refuse(m, f"passes through the symlink {above!r}: writing through links "
                                         f"can land outside the build directory")
                if kinds.setdefault(above, "dir") != "dir":
                    raise self.refuse(m, f"is inside {above!r}, which is not a directory")
            if not parts and m.kind != "dir":
                raise self.refuse(m, "has an empty path")
            before = kinds.get(key)
            if before is not None and (before != m.kind or m.kind not in ("file", "dir")):
                raise self.refuse(m, f"is a second member of that name ({before}, then {m.kind})")
            if m.kind == "hardlink":
                target = _parts(m.link)
                if target is None:
                    raise self.refuse(m, f"is a hard link to {m.link!r}, outside the build directory")
                if kinds.get("/".join(target)) != "file":
                    raise self.refuse(m, f"is a hard link to {m.link!r}, which is not a file earlier in "
                                         f"the archive")
                m.target = target
            if m.kind == "symlink":
                if m.link.startswith("/"):
                    raise self.refuse(m, f"is a symlink to the absolute path {m.link!r}, outside the build "
                                         f"directory")
                links[key] = m.link
            kinds[key] = m.kind
        for m in members:
            if m.kind == "symlink" and _resolve(m.parts[:-1] + m.link.split("/"), links) is None:
                raise self.refuse(m, f"is a symlink to {m.link!r}, which leads outside the build directory "
                                     f"or into a loop")

    def run(self, members):
        members = list(members)
        self.check(members)
        os.makedirs(self.dest, exist_ok=True)
        self.made = set()
        dirs = []
        for m in members:
            path = self.path(m.parts)
            if m.kind == "dir":
                self.directory(m.parts)
                dirs.append(m)
            elif m.kind == "file":
                _remove_file(path)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out, m.open() as data:
                    shutil.copyfileobj(data, out, 1 << 20)
                os.chmod(path, (m.mode | 0o600) & 0o755)  # no group or other write
                if m.mtime is not None:
                    os.utime(path, (m.mtime, m.mtime))
            elif m.kind == "hardlink":
                _remove_file(path)
                os.link(self.path(m.target), path, follow_symlinks=False)
        for m in members:
            if m.kind == "symlink":
                os.symlink(m.link, self.path(m.parts))
        for m in reversed(dirs):  # after every write into them, so their times stay
            path = os.path.join(self.dest, *m.parts)
            os.chmod(path, (m.mode | 0o700) & 0o755)
            if m.mtime is not None:
                os.utime(path, (m.mtime, m.mtime))

    def path(self, parts):
        """The path of a member, its parent directories made and checked to be real directories."""
        self.directory(parts[:-1])
        return os.path.join(self.dest, *parts)

    def directory(self, parts):
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            if key in self.made:
                continue
            path = os.path.join(self.dest, *parts[:i])
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise SourceError(f"{self.archive}: refusing to unpack: {key!r} is not a directory in the "
                                      f"build directory") from None
            self.made.add(key)


def _remove_file(path):
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def source_root(unpacked):
    """The directory a build runs in: the single top directory of an archive, or ``unpacked``."""
    entries = [e for e in os.listdir(unpacked) if e not in ("pax_global_header",)]
    if len(entries) == 1 and os.path.isdir(os.path.join(unpacked, entries[0])):
        return os.path.join(unpacked, entries[0])
    return unpacked
