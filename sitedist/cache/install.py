"""Installing an artifact from a cache into a store, with the crash safety of a build.

Order, for the first cache whose index has the id: read and verify the manifest (signature, id, name,
version, input document), download the archive to the store's tmp/ and check its size and sha256; then,
under the artifact's lock: clear what an interrupted build or install left, unpack with the checked
unpacker sources use (core.sources.unpack), add the manifest's absolute symlinks, check every file
against the manifest, relocate (sitedist.cache.relocate), check no old store path is left, and seal and
mark it complete with Store.complete, marker last. Any failure removes the prefix and tries the next
cache; when none serves, the caller builds it. A kill at any moment leaves a prefix without marker,
which the next sync removes under the lock before installing or building it again."""

import glob
import os
import socket
import stat
import threading
import time

from sitedist.cache import layout  # noqa: F401  (the layout the caches are read with)
from sitedist.cache.relocate import check_clean, relocate
from sitedist.cache.remote import Cache
from sitedist.core.hashing import file_sha256
from sitedist.core.locks import StoreLock
from sitedist.core.processes import pid_alive
from sitedist.core.sources import unpack
from sitedist.core.store import iter_files, remove_tree
from sitedist.errors import CacheError, SitedistError


class Installer:
    """Installs artifacts from ``caches`` (Cache objects, in order) into ``store``; one per sync, used
    from the scheduler's threads. ``notes`` collects what users should hear (a cache down, an entry
    refused), each once; ``fetched`` lists the ids installed from a cache."""

    def __init__(self, store, caches, on_wait=None, on_note=None):
        self.store = store
        self.caches = list(caches)
        self.on_wait = on_wait
        self.on_note = on_note
        self.notes = []
        self.fetched = {}
        self._lock = threading.Lock()

    def note(self, text):
        with self._lock:
            if text in self.notes:
                return
            self.notes.append(text)
        if self.on_note:
            self.on_note(text)

    def find(self, aid):
        """The first cache whose index has ``aid``, else None. A cache that cannot be read is reported
        once and skipped for the rest of this sync."""
        for cache in self.caches:
            if cache.down:
                continue
            try:
                if cache.lookup(aid) is not None:
                    return cache
            except CacheError as exc:
                cache.down = str(exc)
                self.note(f"cache skipped: {exc}")
        return None

    def install(self, spec, ctx=None):
        """Install the artifact ``spec`` (a spec record: id, name, version, doc, deps -> this store's
        prefixes) from a cache. Returns 'fetched', 'reused' (complete by now), or None (no cache could
        serve it: build it)."""
        aid, name, version = spec["id"], spec["name"], spec["version"]
        for cache in self.caches:
            if cache.down:
                continue
            try:
                if cache.lookup(aid) is None:
                    continue
            except CacheError as exc:
                cache.down = str(exc)
                self.note(f"cache skipped: {exc}")
                continue
            try:
                outcome = self._install_from(cache, spec, ctx)
            except SitedistError as exc:
                self.note(f"{name} {version} ({aid}) not installed from {cache.url}: {exc}")
                continue
            if outcome == "fetched":
                with self._lock:
                    self.fetched[aid] = cache.url
            return outcome
        return None

    def _install_from(self, cache, spec, ctx):
        store = self.store
        aid, name, version = spec["id"], spec["name"], spec["version"]
        manifest = cache.manifest(aid, name, version, spec["doc"])
        os.makedirs(store.tmp_dir, exist_ok=True)
        _remove_dead_downloads(store.tmp_dir, aid)
        archive = os.path.join(store.tmp_dir, f"cache-{aid}-{socket.gethostname()}-{os.getpid()}-"
                                              f"{time.monotonic_ns()}.tar.gz")
        prefix = store.prefix(name, version, aid)
        try:
            if ctx is not None:
                ctx.output(f"sitedist: downloading {name} {version} from {cache.url}")
            cache.download(manifest, archive)
            with StoreLock(store.lock_path(name, version, aid), what=f"installing {name} {version} {aid} from a cache",
                           on_wait=self.on_wait):
                if store.is_complete(prefix):
                    return "reused"
                started = time.time()
                ok = False
                try:
                    store.prepare_prefix(prefix)
                    unpack(archive, prefix)
                    os.unlink(archive)  # before the marker: no kill leaves a download behind a complete artifact
                    _add_absolute_links(prefix, manifest)
                    _check_files(prefix, manifest, f"cache {cache.url}: {name} {version} ({aid})")
                    olds, mapping = _mapping(manifest, spec, prefix, store.root)
                    what = f"{name} {version} ({aid})"
                    relocate(prefix, _places(manifest), mapping, what)
                    check_clean(prefix, olds, [n for _, n in mapping], what)
                    record = {**spec, "started": started, "finished": time.time(), "from_cache": cache.url}
                    store.complete(prefix, record, None)
                    ok = True
                except OSError as exc:
                    raise CacheError(f"{exc.strerror or exc} ({exc.filename})") from None
                finally:
                    if not ok:
                        remove_tree(prefix)
        finally:
            if os.path.exists(archive):
                os.unlink(archive)
        return "fetched"


def _remove_dead_downloads(tmp_dir, aid):
    """Downloads of ``aid`` that a killed sync of this host left in the store's tmp/."""
    host = socket.gethostname()
    for path in glob.glob(os.path.join(glob.escape(tmp_dir), f"cache-{aid}-{glob.escape(host)}-*.tar.gz")):
        try:
            pid = int(os.path.basename(path)[:-len(".tar.gz")].rsplit("-", 2)[1])
        except ValueError:
            continue
        if not pid_alive(pid):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _places(manifest):
    places = manifest.get("relocate") or {}
    if not isinstance(places, dict):
        raise CacheError("the manifest's relocation list is malformed")
    for rel, kinds in places.items():
        if not isinstance(kinds, list) or not set(kinds) <= {"symlink", "rpath", "text", "binary"} or rel not in manifest["files"]:
            raise CacheError(f"the manifest's relocation entry for {rel!r} is malformed")
    return places


def _mapping(manifest, spec, prefix, root):
    """(old paths, [(old, new)]) as bytes: the artifact's own prefix, its dependencies' prefixes (by
    name; they may now live in an upstream store), then any other path under the old store roots."""
    pairs = [(manifest.get("prefix"), prefix)]
    new_deps = spec.get("deps") or {}
    for dep, old in (manifest.get("deps") or {}).items():
        if dep in new_deps:
            pairs.append((old, new_deps[dep]))
    for old_root in manifest.get("old_roots") or []:
        pairs.append((old_root, root.rstrip("/") + "/"))
    for old, new in pairs:
        if not isinstance(old, str) or not old.startswith("/"):
            raise CacheError("the manifest's store paths are malformed")
    enc = [(o.encode("utf-8", "surrogateescape"), n.encode("utf-8", "surrogateescape")) for o, n in pairs]
    return [o for o, _ in enc], enc


def _add_absolute_links(prefix, manifest):
    """The absolute symlinks the manifest lists (archives carry none: the unpacker refuses them), each
    in a real directory of the prefix."""
    for rel, entry in sorted(manifest["files"].items()):
        link = entry.get("link") if isinstance(entry, dict) else None
        if not (isinstance(link, str) and link.startswith("/")):
            continue
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "" in parts or "\0" in rel + link:
            raise CacheError(f"the manifest lists a symlink at {rel!r}, outside the prefix")
        parent = prefix
        for part in parts[:-1]:
            parent = os.path.join(parent, part)
            if not os.path.lexists(parent):
                os.mkdir(parent, 0o755)
            elif not stat.S_ISDIR(os.lstat(parent).st_mode):
                raise CacheError(f"the manifest's symlink {rel!r} passes through a non-directory")
        os.symlink(link, os.path.join(prefix, rel))


def _check_files(prefix, manifest, what):
    """Every file and symlink unpacked is in the manifest with its sha256 and size or link target, and
    every file the manifest lists is there."""
    want = manifest["files"]
    seen = set()
    for rel, path, st in iter_files(prefix):
        entry = want.get(rel)
        if not isinstance(entry, dict):
            raise CacheError(f"{what}: the archive holds {rel}, which its manifest does not list; refused")
        if stat.S_ISLNK(st.st_mode):
            ok = entry.get("link") == os.readlink(path)
        else:
            ok = entry.get("size") == st.st_size and entry.get("sha256") == file_sha256(path)
        if not ok:
            raise CacheError(f"{what}: {rel} in the archive differs from its manifest; refused")
        seen.add(rel)
    missing = sorted(set(want) - seen)
    if missing:
        raise CacheError(f"{what}: the archive lacks {len(missing)} file(s) its manifest lists (e.g. {missing[0]}); "
                         f"refused")


def caches_from_config(config):
    """The Cache objects of a config's ``caches:`` (each entry already validated by the schema)."""
    out = []
    for i, entry in enumerate(config.caches):
        where = config.where("caches", i)
        out.append(Cache(entry["url"], trusted_keys=entry.get("trusted_keys", []),
                         signed=entry.get("signed", True), timeout=entry.get("timeout", 10.0), where=where))
    return out
