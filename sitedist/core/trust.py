"""Files only this user (or root) could have written: the rule for every cache sitedist reads.

A cache (probe results, parsed documents) decides what a sync builds and links, and the documents
cache is a pickle, which is code when loaded. So a cache is read, and written, only where no other
user could have put or replaced anything: the file and every directory above it must be owned by the
running user or by root and must not be writable by group or others (a sticky directory such as /tmp
counts as safe for what lies below it only when the next entry is ours). Root trusts only root:
``sudo -E`` or ``su`` without ``-`` keeps a user's ``$XDG_CACHE_HOME`` and ``$HOME``, and root must
not take that user's cache, nor write into it. Where the rule fails, sitedist warns and works
without the cache (it probes again), which costs time only.
"""

import errno
import logging
import os
import stat

from sitedist.core.durable import write_atomic

log = logging.getLogger(__name__)


def _trusted_owners():
    uid = os.geteuid()
    return {0} if uid == 0 else {0, uid}


def untrusted_reason(path, passed=None):
    """Why ``path`` (a file or directory, existing or not) could have been written by another user,
    or None. For a path that does not exist yet, its existing ancestors are checked. ``passed``, a set
    the caller keeps for one run, remembers the directories above a path that passed, so that checking
    a thousand files of one directory walks its chain once."""
    owners = _trusted_owners()
    passed = set() if passed is None else passed
    path = os.path.abspath(path)
    seen = set()
    for candidate in (path, os.path.realpath(path)):
        if candidate in seen:
            continue
        seen.add(candidate)
        chain = [os.sep]
        for part in candidate.split(os.sep):
            if part:
                chain.append(os.path.join(chain[-1], part))
        for i, step in enumerate(chain):
            last = i == len(chain) - 1
            if not last and step in passed:
                continue
            try:
                st = os.lstat(step)
            except FileNotFoundError:
                break
            except OSError as exc:
                return f"{step}: {exc.strerror}"
            if st.st_uid not in owners:
                return f"{step} is owned by uid {st.st_uid}, not by {' or '.join(f'uid {o}' for o in sorted(owners))}"
            if stat.S_ISLNK(st.st_mode):
                continue  # its target is checked as part of the real path
            writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
            if writable and (last or not sticky):
                return f"{step} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'}"
            if not last:
                passed.add(step)
    return None


def private_dir(path, what):
    """``path`` made if missing (mode 0700), if it and its parents pass the rule; else None, with a
    warning naming why."""
    reason = untrusted_reason(path)
    if reason is None and not os.path.isdir(path):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.debug("cannot make %s: %s", path, exc)
            return None
        reason = untrusted_reason(path)
    if reason is not None:
        log.warning("not using the %s in %s: %s (another user could have written it); working without it",
                    what, path, reason)
        return None
    return path


def open_private(path, mode="r", **kwargs):
    """Open an existing cache file for reading, refusing (OSError) a link or a file another user owns
    or could write. Checks the open file itself, so a file swapped in after a check is not read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in _trusted_owners() or \
                st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(errno.EPERM, "not a private file of this user", path)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def write_private(path, data):
    """Write ``data`` (bytes, or a list of bytes-like pieces written one after the other) to ``path``
    atomically, as a new file of mode 0600 (never through a link or into a file someone placed at the
    temporary name: :func:`sitedist.core.durable.write_atomic`)."""
    write_atomic(path, data, mode=0o600)
