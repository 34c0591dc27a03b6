"""What module trees and profiles share: numbered generations and a symlink switched in one rename.

A published tree is ``<generations dir>/<N>/``; what users see is a symlink to one of them, replaced
atomically (a new link under a temporary name, then rename over the old one), so a reader only ever
sees the old generation or the new one.
"""

import os

from sitedist.core.processes import pid_alive


def point(link, target):
    """Make ``link`` a symlink to ``target`` in one rename; OSError if ``link`` is not a symlink."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise IsADirectoryError(f"{link} exists and is not a symlink")
    _remove_stale_tmp(link)
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(link)))


def _remove_stale_tmp(link):
    """Remove the temporary links of switches killed half-way (``<link>.tmp-<pid>`` of a dead pid)."""
    directory, base = os.path.split(os.path.abspath(link))
    for name in os.listdir(directory):
        pid = name[len(base) + 5:] if name.startswith(base + ".tmp-") else ""
        if pid.isdigit() and not pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def generation_of(link):
    """The generation number a switch symlink points at, or None."""
    try:
        name = os.path.basename(os.readlink(link))
    except OSError:
        return None
    return int(name) if name.isdigit() else None


def numbers(gens_dir):
    """The generation numbers present in ``gens_dir``, ascending."""
    try:
        return sorted(int(n) for n in os.listdir(gens_dir) if n.isdigit())
    except FileNotFoundError:
        return []


def fsync_dir(path):
    """Flush a directory's entries (a rename in it) to disk; best effort where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
