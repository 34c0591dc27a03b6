"""Sources: fetch into the store's cache (keyed by sha256), verify, and unpack safely.

A URL source is looked for, in order, in the cache, in each mirror (a directory or URL; a mirror that
publishes a ``SHA256SUMS`` index is searched by checksum, so file names need not match), and at its
own URL. Every download is checked against the recipe's sha256 before it enters the cache; the cache
is written by rename, so a killed download leaves nothing behind that could be taken for a source.

Git sources are pinned to a commit; directory sources are hashed by content.
"""

import os
import shutil
import subprocess
import tarfile
import time
import urllib.parse
import zipfile

from sitedist.core.hashing import tree_sha256
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
        """A verified copy of the source: in this store's cache, else in an upstream store's."""
        for cache in [self.cache_dir] + self.upstream_caches:
            path = os.path.join(cache, source["sha256"], source_filename(source))
            if os.path.exists(path):
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
    """Unpack a tar or zip archive into ``dest``; a member that would land outside it is an error."""
    os.makedirs(dest, exist_ok=True)
    name = os.path.basename(archive)
    if name.endswith(".zip"):
        _unzip(archive, dest)
        return
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=_strict_filter)
    except tarfile.FilterError as exc:
        raise SourceError(f"{name}: refusing to unpack: {exc} (nothing of the archive was used)") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(f"{name}: cannot unpack: {exc}") from None


def _strict_filter(member, path):
    if member.isdev() or member.isfifo():
        raise tarfile.FilterError(f"member {member.name!r} is a device or FIFO")
    if member.name.startswith("/"):
        raise tarfile.FilterError(f"member {member.name!r} has an absolute path, outside the build directory")
    if member.islnk() and member.linkname.startswith("/"):
        raise tarfile.FilterError(f"member {member.name!r} is a hard link to {member.linkname!r}, outside the "
                                  f"build directory")
    return tarfile.data_filter(member, path)


def _unzip(archive, dest):
    real_dest = os.path.realpath(dest)
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                target = os.path.realpath(os.path.join(dest, info.filename))
                if info.filename.startswith("/") or not (target == real_dest or target.startswith(real_dest + os.sep)):
                    raise SourceError(f"{os.path.basename(archive)}: refusing to unpack member {info.filename!r}: "
                                      f"it would land outside the build directory")
            z.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{os.path.basename(archive)}: cannot unpack: {exc}") from None


def source_root(unpacked):
    """The directory a build runs in: the single top directory of an archive, or ``unpacked``."""
    entries = [e for e in os.listdir(unpacked) if e not in ("pax_global_header",)]
    if len(entries) == 1 and os.path.isdir(os.path.join(unpacked, entries[0])):
        return os.path.join(unpacked, entries[0])
    return unpacked
