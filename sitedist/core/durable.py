"""Flushing to disk before a rename makes something visible: one place for what every switch needs.

A rename is atomic but not durable by itself: after a power cut the new name can point at a file whose
data, or a directory whose entries, never reached the disk. So whatever a rename publishes (a
generation, an artifact's manifest and marker) is flushed first (:func:`flush_tree`), and the directory
holding the new name is flushed after (:func:`fsync_dir`).
"""

import errno
import os
import stat


def fsync_dir(path):
    """Flush a directory's entries (a rename in it) to disk; best effort where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    """Flush a regular file's data to disk (a file we may not open for reading is left as it is)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EACCES, errno.ELOOP):
            raise


def flush_tree(path, files=True):
    """Flush everything under ``path``: each regular file (unless ``files`` is False: the caller has
    flushed them), then each directory, deepest first, ``path`` itself last. Symbolic links live in
    their directory's entries, so they are flushed with it."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        if files:
            for name in filenames:
                full = os.path.join(dirpath, name)
                if stat.S_ISREG(os.lstat(full).st_mode):
                    fsync_file(full)
        fsync_dir(dirpath)
