"""Where things are in a cache (admin_docs/caches.md), a directory or the same tree behind a web server::

    <cache>/cache.json                  {"format": 1}
    <cache>/index.json                  {"format": 1, "entries": {id: {name, version, manifest, archive,
                                         sha256, size}}}: one read tells a sync which ids the cache has
    <cache>/manifests/<id>.json         {"manifest": {...}, "signatures": [{key, signature}]}
    <cache>/archives/<id>.tar.gz        the artifact's files (absolute symlinks are in the manifest only)
    <cache>/tmp/, <cache>/locks/        a push's files being written, its locks

An entry exists once the index names it; the index is written last (by rename, under a lock), after its
archive and manifest, so a killed push leaves nothing that a sync would take for an entry.
"""

FORMAT = 1
INDEX = "index.json"
INFO = "cache.json"


def manifest_path(aid):
    return f"manifests/{aid}.json"


def archive_path(aid):
    return f"archives/{aid}.tar.gz"
