"""Reading a cache: a directory, a ``file://`` URL or an ``http(s)://`` URL (urllib; any web server
that serves the cache's files will do). Everything read is checked before use: the index and manifests
are JSON of a known shape, manifests carry a signature from a trusted key (unless the config marks the
cache ``signed: false``), archives must have the sha256 and size their manifest names."""

import hashlib
import http.client
import json
import os
import threading
import time
import urllib.parse

from sitedist.cache import keys, layout
from sitedist.errors import CacheError

MAX_JSON = 256 << 20


class Cache:
    def __init__(self, url, trusted_keys=(), signed=True, timeout=10.0, where=None):
        self.url = url
        self.where = where or url
        self.signed = signed
        self.timeout = timeout
        self.trusted = [keys.load_public(k) for k in trusted_keys] if signed else []
        self.down = None  # why it was skipped, once it failed
        self._index = None
        self._lock = threading.Lock()
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme in ("http", "https"):
            self.base, self.local = url.rstrip("/") + "/", None
        elif parsed.scheme == "file":
            self.base, self.local = None, urllib.parse.unquote(parsed.path)
        elif parsed.scheme == "" and url.startswith("/"):
            self.base, self.local = None, url
        else:
            raise CacheError(f"{self.where}: cache url {url!r}: use a directory, file:// or http(s)://")

    def __str__(self):
        return self.url

    # --- transport -----------------------------------------------------------------------------

    def _open(self, rel):
        if self.local is not None:
            return open(os.path.join(self.local, rel), "rb")
        import urllib.request

        return urllib.request.urlopen(self.base + urllib.parse.quote(rel), timeout=self.timeout)

    def _read(self, rel, limit=MAX_JSON):
        try:
            with self._open(rel) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if getattr(exc, "code", None) == 404:
                return None
            raise CacheError(f"cache {self.url}: cannot read {rel}: {getattr(exc, 'reason', None) or exc}") from None
        if len(data) > limit:
            raise CacheError(f"cache {self.url}: {rel} is larger than {limit} bytes")
        return data

    def _json(self, rel):
        data = self._read(rel)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CacheError(f"cache {self.url}: {rel} is not valid JSON ({exc})") from None

    # --- lookups -------------------------------------------------------------------------------

    def index(self):
        """The cache's entries by id (read once); CacheError when the cache cannot be read."""
        with self._lock:
            if self._index is None:
                doc = self._json(layout.INDEX)
                if doc is None:
                    doc = {"format": layout.FORMAT, "entries": {}}
                if not isinstance(doc, dict) or doc.get("format") != layout.FORMAT or not isinstance(
                        doc.get("entries"), dict):
                    raise CacheError(f"cache {self.url}: {layout.INDEX} is not a sitedist cache index of "
                                     f"format {layout.FORMAT}")
                self._index = doc["entries"]
            return self._index

    def lookup(self, aid):
        entry = self.index().get(aid)
        return entry if isinstance(entry, dict) else None

    def manifest(self, aid, name, version, doc):
        """The verified manifest of ``aid``: signed by a trusted key (unless unsigned on purpose), and
        naming this artifact and input document. CacheError otherwise."""
        wrapped = self._json(layout.manifest_path(aid))
        what = f"cache {self.url}: {name} {version} ({aid})"
        if not isinstance(wrapped, dict) or not isinstance(wrapped.get("manifest"), dict):
            raise CacheError(f"{what}: the manifest is missing or malformed")
        manifest = wrapped["manifest"]
        if self.signed:
            if not wrapped.get("signatures"):
                raise CacheError(f"{what}: the manifest is not signed; refused (the config trusts this cache "
                                 f"only with signatures: {self.where})")
            if keys.verify(manifest, wrapped.get("signatures"), self.trusted) is None:
                names = ", ".join(s.get("key", "?") for s in wrapped["signatures"] if isinstance(s, dict))
                raise CacheError(f"{what}: the manifest's signature ({names}) does not verify with any trusted "
                                 f"key of {self.where}; refused")
        for key, want in (("id", aid), ("name", name), ("version", version), ("doc", doc)):
            if manifest.get(key) != want:
                raise CacheError(f"{what}: the manifest's {key} does not match the artifact this sync wants")
        if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("archive"), dict):
            raise CacheError(f"{what}: the manifest lacks its file list or archive")
        return manifest

    def download(self, manifest, dest):
        """Copy the archive of ``manifest`` to ``dest``, checking its size and sha256."""
        rel = layout.archive_path(manifest["id"])
        want_sha, want_size = manifest["archive"].get("sha256"), manifest["archive"].get("size")
        h, size = hashlib.sha256(), 0
        started = time.monotonic()
        try:
            with self._open(rel) as src, open(dest, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if isinstance(want_size, int) and size > want_size:
                        raise CacheError(f"cache {self.url}: {rel} is longer than its manifest says")
                    h.update(chunk)
                    out.write(chunk)
        except CacheError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise CacheError(f"cache {self.url}: cannot download {rel}: {getattr(exc, 'reason', None) or exc}") from None
        if size != want_size or h.hexdigest() != want_sha:
            raise CacheError(f"cache {self.url}: {rel} does not match its manifest (got {size} bytes, sha256 "
                             f"{h.hexdigest()}; the manifest says {want_size} bytes, sha256 {want_sha}): a "
                             f"truncated download or a changed archive; refused")
        return time.monotonic() - started
