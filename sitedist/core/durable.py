"""Flushing to disk before a rename makes something visible: one place for what every switch needs.

A rename is atomic but not durable by itself: after a power cut the new name can point at a file whose
data, or a directory whose entries, never reached the disk. So whatever a rename publishes (a
generation, an artifact's manifest and marker) is flushed first (:func:`flush_tree`), and the directory
holding the new name is flushed after (:func:`fsync_dir`).
"""

import ctypes
import errno
import os


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
    their directory's entries, so they are flushed with it (and never followed, nor stat'ed: a tree of
    thousands of links costs no more than its directories)."""
    try:
        entries = list(os.scandir(path))
    except OSError:   # unreadable: skipped, as os.walk skips it
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            flush_tree(entry.path, files)
        elif files and entry.is_file(follow_symlinks=False):
            fsync_file(entry.path)
    fsync_dir(path)


def sync_filesystem(path):
    """Flush everything written to the file system that holds ``path`` (Linux ``syncfs``): where thousands
    of new files must reach the disk, one journal commit instead of one per file and directory. False
    where the call is unavailable (the caller then flushes file by file)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)
