"""What module trees and profiles share: numbered generations and a symlink switched in one rename.

A published tree is ``<generations dir>/<N>/``; what users see is a symlink to one of them, replaced
atomically (a new link under a temporary name, then rename over the old one), so a reader only ever
sees the old generation or the new one. A generation is written as ``.staging-<N>-<pid>`` (its record
first: the artifact prefixes it references) and renamed to ``<N>``; a pruned one is renamed to
``.trash-<N>-<pid>`` (one step, so a reader sees it whole or not at all) and then deleted.
"""

import os
import shutil

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


def remove_generations(gens_dir, numbers_):
    """Remove the generations ``numbers_``: each renamed into the trash first, then deleted."""
    for n in numbers_:
        trash = os.path.join(gens_dir, f".trash-{n}-{os.getpid()}")
        os.rename(os.path.join(gens_dir, str(n)), trash)
        shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(gens_dir, all_staging=False):
    """Remove what killed publishers and prunes left: trash, and the staging directories of dead
    processes (``all_staging``: every one, for a caller holding the tree's lock)."""
    for name in os.listdir(gens_dir):
        if name.startswith(".trash-") or (name.startswith(".staging-") and (
                all_staging or not pid_alive(int(name.rsplit("-", 1)[1])))):
            shutil.rmtree(os.path.join(gens_dir, name), ignore_errors=True)


def previous(gens_dir, current):
    """The newest generation older than ``current`` (what a rollback switches to), or None."""
    earlier = [n for n in numbers(gens_dir) if n < current]
    return earlier[-1] if earlier else None


def records(gens_dir, read):
    """[(number, directory, record)] of the generations, oldest first; ``read(directory)`` gives a
    generation's record or None (then ``{}``)."""
    out = []
    for n in numbers(gens_dir):
        path = os.path.join(gens_dir, str(n))
        out.append((n, path, read(path) or {}))
    return out


def referenced_prefixes(gens_dir, read, skip=()):
    """What the generations (and one being written) reference, except the numbers in ``skip``:
    (artifact prefixes, [numbered generations without a record]). ``read(directory)`` gives a
    generation's record or None. A generation pruned since the listing is skipped."""
    live, unknown = set(), []
    try:
        names = os.listdir(gens_dir)
    except FileNotFoundError:
        return live, unknown
    for name in names:
        path = os.path.join(gens_dir, name)
        if name.startswith(".trash-") or (name.isdigit() and int(name) in skip) or not os.path.isdir(path):
            continue
        record = read(path)
        if record is not None:
            live.update(record["prefixes"])
        elif name.isdigit() and os.path.isdir(path):
            unknown.append(name)   # a staging directory before its record references nothing yet
    return live, unknown


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
