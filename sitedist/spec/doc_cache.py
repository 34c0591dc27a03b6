"""A cache of parsed and validated YAML documents, so that a sync over a thousand unchanged recipes
neither parses nor validates them again.

An entry is reused while its file's (mtime_ns, size, inode, ctime_ns) are unchanged. The cache is a pickle in
the user's cache directory, one per config and sitedist version. Loading a pickle runs code, so it is
read and written only where no other user could have written (core.trust: the file and every directory
above it owned by this user or root, and not writable by others; as root, owned by root).
"""

import hashlib
import logging
import os
import pickle

from sitedist.core.trust import open_private, private_dir, untrusted_reason, write_private
from sitedist.spec.marked_yaml import load_file
from sitedist.spec.schema import validate

log = logging.getLogger(__name__)


def _stamp(path):
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)   # ctime: an edit that restores mtime


class DocCache:
    def __init__(self, path=None):
        self.path = path
        self._entries = None   # read from ``path`` when first needed: a sync whose plan is cached never needs
        self.dirty = False     # the recipes' documents
        self.warned = set()   # directories already named in a warning (once per run)
        self.passed = set()   # directories found safe (core.trust.untrusted_reason's memo for this run)

    @property
    def entries(self):
        if self._entries is None:
            self._entries = {}
            if self.path and os.path.exists(self.path):
                try:
                    with open_private(self.path, "rb") as f:
                        self._entries = pickle.load(f)
                except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError, ValueError):
                    self._entries = {}
        return self._entries

    @classmethod
    def for_config(cls, config_path, cache_dir, part=""):
        """The cache of one config's documents; ``part`` names a separate file (the config's own files
        apart from its recipes, so that reading the config does not read a thousand recipes' documents)."""
        from sitedist import __version__

        cache_dir = private_dir(cache_dir, "documents cache") if cache_dir else None
        if cache_dir is None:
            return cls()
        key = hashlib.sha256(f"{__version__}\0{os.path.abspath(config_path)}".encode()).hexdigest()[:20]
        return cls(os.path.join(cache_dir, f"docs-{key}{part}.pickle"))

    def seen(self, path):
        """The (mtime_ns, size, inode, ctime_ns) of ``path`` when the document this cache gave for it was parsed."""
        hit = self.entries.get(os.path.abspath(path))
        return hit[0] if hit else None

    def load(self, path, schema, what):
        """The document at ``path``, validated against ``schema``; errors name file and line."""
        path = os.path.abspath(path)
        self._warn_if_others_can_write(path, what)
        try:
            stamp = _stamp(path)
        except OSError:
            stamp = None
        hit = self.entries.get(path)
        if stamp is not None and hit is not None and hit[0] == stamp:
            return hit[1]
        doc = load_file(path)
        if doc is not None:
            validate(doc, schema, path, what)
        if stamp is not None:
            self.entries[path] = (stamp, doc)
            self.dirty = True
        return doc

    def _warn_if_others_can_write(self, path, what):
        """As root, say when a config or recipe could have been written by another user: its build
        commands run as root (admin_docs/security.md). A warning, not an error: admins often share a
        group-writable checkout on purpose."""
        directory = os.path.dirname(path)
        if os.geteuid() != 0 or directory in self.warned:
            return
        reason = untrusted_reason(path, self.passed)
        if reason is not None:
            self.warned.add(directory)
            log.warning("%s %s: %s; whoever can write it decides what runs as root in this sync", what, path,
                        reason)

    def save(self):
        if not (self.path and self.dirty):
            return
        try:
            write_private(self.path, pickle.dumps(self.entries, protocol=pickle.HIGHEST_PROTOCOL))
            self.dirty = False
        except OSError:
            pass  # a cache that cannot be written only costs time
