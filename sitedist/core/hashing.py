"""The hash protocol: how a build's inputs name its artifact.

A build spec is a JSON document (see admin_docs/hash-protocol.md for every field). Its canonical form
is UTF-8 JSON with keys sorted, no insignificant white space, and no floats; the artifact id is the
first 20 characters of the lower-case RFC 4648 base32 encoding of the SHA-256 of that form (100 bits).

``PROTOCOL`` is part of every document. It changes only when the meaning of a document changes (a new
field, a different build environment), and tests/test_hashing.py pins golden vectors so that a release
cannot change every hash by accident.
"""

import base64
import hashlib
import json
import os

PROTOCOL = 2
ID_LENGTH = 20
CHUNK = 1 << 20


def canonical(document, checked=True):
    """The canonical form. ``checked=False`` skips the walk that refuses floats and non-string keys, for
    a caller that guarantees both (a document parsed from JSON with floats refused: spec.lock)."""
    def check(value):
        if isinstance(value, float):
            raise TypeError("floats are not allowed in hashed documents; use strings")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise TypeError("keys of hashed documents must be strings")
                check(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                check(v)

    if checked:
        check(document)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest(document):
    return hashlib.sha256(canonical(document)).hexdigest()


def artifact_id(document, checked=True):
    raw = hashlib.sha256(canonical(document, checked)).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:ID_LENGTH]


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def tree_sha256(root, exclude=(".git",)):
    """Hash of a directory's content: relative paths, file modes (executable or not), file data and
    symlink targets, in sorted order. Timestamps and owners do not count."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(path):
                h.update(f"L {rel}\0{os.readlink(path)}\0".encode())
            elif os.path.isfile(path):
                mode = "x" if os.access(path, os.X_OK) else "f"
                h.update(f"{mode} {rel}\0{file_sha256(path)}\0".encode())
    return h.hexdigest()
