"""Making something visible by a rename, and flushing it to disk first: one place for what every switch needs.

:func:`write_atomic` writes a file by rename: a reader sees the old file or the new one, never half of
one. A rename is atomic but not durable by itself: after a power cut the new name can point at a file
whose data, or a directory whose entries, never reached the disk. So whatever a rename publishes (a
generation, an artifact's manifest and marker) is flushed first (``durable=True``, :func:`flush_tree`),
and the directory holding the new name is flushed after (:func:`fsync_dir`).
"""

import ctypes
import errno
import os
import time

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def write_atomic(path, data, *, mode=None, durable=False):
    """Write ``data`` (bytes or str, UTF-8; or a list of such pieces, written one after the other) to
    ``path`` by a rename: a reader sees the old file or the new one, never half of one.

    The temporary file ``<path>.tmp-<pid>-<ns>`` (a name ``sitedist verify`` reports when a killed
    process left it) is always a new file (``O_EXCL | O_NOFOLLOW``): never a link or a file someone
    placed at that name, never one another thread or process is writing (then another name is taken). It
    is removed when writing fails, so ``path`` keeps its old content and nothing is left beside it.

    ``mode``: the file's exact permissions whatever the umask (it is never wider while being written);
    without it, as ``open()`` makes files (0666 less the umask). ``durable``: its data is flushed to disk
    before the rename (a power cut leaves the old file or the whole new one)."""
    for _ in range(100):
        tmp = f"{path}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            fd = os.open(tmp, _CREATE, 0o666 if mode is None else mode)
            break
        except FileExistsError:   # a link or file planted there, or another thread's same instant
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name beside the file", path)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(fd, mode)
            for piece in data if isinstance(data, list) else [data]:
                f.write(piece.encode() if isinstance(piece, str) else piece)
            if durable:
                f.flush()
                os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def current_umask():
    """This process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
