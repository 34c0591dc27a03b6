"""``sitedist cache push``: write complete artifacts of a store into a directory cache.

Per artifact, under the cache's lock of that id: the archive is written to ``tmp/`` and renamed into
``archives/``, then the signed manifest into ``manifests/``, then the id is added to the index (under
the index lock, by rename). An id already in the index is left alone. A killed push leaves at most an
archive or manifest that no index names (the next push of that id writes them again)."""

import hashlib
import json
import os
import stat
import tarfile
import time

from sitedist.cache import keys, layout
from sitedist.cache.relocate import scan
from sitedist.core.durable import write_atomic
from sitedist.core.locks import StoreLock
from sitedist.core.store import META, Store
from sitedist.errors import CacheError

COMPRESSLEVEL = 6


def init_cache(dest):
    for sub in ("", "archives", "manifests", "tmp", "locks"):
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    info = os.path.join(dest, layout.INFO)
    if not os.path.exists(info):
        write_atomic(info, json.dumps({"format": layout.FORMAT}), durable=True)
    else:
        try:
            with open(info, encoding="utf-8") as f:
                fmt = json.load(f).get("format")
        except (OSError, ValueError, AttributeError) as exc:
            raise CacheError(f"{info} is unreadable ({exc}): is {dest} a sitedist cache?") from None
        if fmt != layout.FORMAT:
            raise CacheError(f"{dest} is a cache of format {fmt}; this sitedist writes format {layout.FORMAT}")


def read_index(dest):
    path = os.path.join(dest, layout.INDEX)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {"format": layout.FORMAT, "entries": {}}
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path} is unreadable ({exc}); nothing was pushed") from None
    return doc


def make_archive(prefix, dest_file):
    """A tar.gz of ``prefix`` (outside .sitedist/), absolute symlinks left out (the manifest has them);
    returns (sha256, size)."""
    def clean(info):
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode &= 0o755 if info.isdir() else 0o7755
        return info

    with tarfile.open(dest_file, "w:gz", compresslevel=COMPRESSLEVEL, format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(prefix):
            rel_dir = os.path.relpath(dirpath, prefix)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != META]
            dirnames.sort()
            names = sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))])
            for name in sorted(set(names) | set(dirnames)):
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) and os.readlink(path).startswith("/"):
                    continue
                if stat.S_ISLNK(st.st_mode) or stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    tar.add(path, arcname=rel, recursive=False, filter=clean)
    h = hashlib.sha256()
    with open(dest_file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest(), os.path.getsize(dest_file)


def old_paths(prefix, spec):
    """The store roots (with a trailing '/') an artifact may hold: its own and its dependencies'."""
    roots = {os.path.dirname(os.path.dirname(prefix))}
    roots |= {os.path.dirname(os.path.dirname(p)) for p in (spec.get("deps") or {}).values() if p}
    return sorted(r.rstrip("/") + "/" for r in roots)


def make_manifest(prefix, spec, archive_sha, archive_size):
    with open(os.path.join(prefix, META, "manifest.json"), encoding="utf-8") as f:
        files = json.load(f)["files"]
    olds = old_paths(prefix, spec)
    return {
        "format": layout.FORMAT,
        "id": spec["id"], "name": spec["name"], "version": spec["version"], "kind": spec.get("kind"),
        "doc": spec["doc"],
        "prefix": prefix,
        "store_root": os.path.dirname(os.path.dirname(prefix)),
        "old_roots": olds,
        "deps": spec.get("deps") or {},
        "files": files,
        "relocate": scan(prefix, [o.encode("utf-8", "surrogateescape") for o in olds]),
        "archive": {"file": layout.archive_path(spec["id"]), "sha256": archive_sha, "size": archive_size,
                    "format": "tar.gz"},
        "pushed": time.time(),
    }


def push(dest, prefixes, secret=None, on_wait=None):
    """Push the complete artifacts at ``prefixes`` into the directory cache ``dest``. ``secret`` is a
    loaded key (keys.load_secret) or None for unsigned entries. Returns {id: 'pushed'|'present'}."""
    dest = os.path.abspath(dest)
    init_cache(dest)
    out = {}
    for prefix in prefixes:
        if not Store.is_complete(prefix):
            raise CacheError(f"{prefix} is not a complete artifact; nothing of it was pushed")
        spec = Store.read_spec(prefix)
        aid = spec["id"]
        if aid in read_index(dest).get("entries", {}):
            out[aid] = "present"
            continue
        with StoreLock(os.path.join(dest, "locks", f"{aid}.lock"), what=f"pushing {spec['name']} {aid}",
                       on_wait=on_wait):
            if aid in read_index(dest).get("entries", {}):
                out[aid] = "present"
                continue
            tmp = os.path.join(dest, "tmp", f"{aid}.tar.gz.{os.getpid()}-{time.monotonic_ns()}")
            try:
                sha, size = make_archive(prefix, tmp)
                manifest = make_manifest(prefix, spec, sha, size)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, os.path.join(dest, layout.archive_path(aid)))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            wrapped = {"manifest": manifest, "signatures": [keys.sign(manifest, secret)] if secret else []}
            write_atomic(os.path.join(dest, layout.manifest_path(aid)), json.dumps(wrapped, indent=1, sort_keys=True),
                         durable=True)
            entry = {"name": spec["name"], "version": spec["version"], "manifest": layout.manifest_path(aid),
                     "archive": layout.archive_path(aid), "sha256": sha, "size": size}
            with StoreLock(os.path.join(dest, "locks", "index.lock"), what="updating the index", on_wait=on_wait):
                index = read_index(dest)
                index.setdefault("entries", {})[aid] = entry
                write_atomic(os.path.join(dest, layout.INDEX), json.dumps(index, sort_keys=True), durable=True)
            out[aid] = "pushed"
    return out
