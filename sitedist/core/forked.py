"""Splitting CPU-bound work that writes files over forked processes (``core.forked``).

``run_shares(work, shares)`` calls ``work(share)`` for every share: the first in this process, each other
one in a child forked for it, all at once, and waits for them all. The children share this process's
memory as it is at the fork (nothing is pickled) and report back only whether they failed, and why. Used
where one publish renders thousands of files (module trees); anything a child made stays on disk for the
caller to commit or clean up, as if this process had made it.

A child never returns into the caller's code: it ends with ``os._exit``, so it flushes no buffers, runs no
``atexit`` handler and writes nothing to the terminal (another thread of this process may hold the lock
of ``sys.stdout`` at the fork).
"""

import os
import traceback

MAX_PROCESSES = 4


def processes(cpus=None):
    """How many processes to split over: the CPUs this process may use, at most ``MAX_PROCESSES``."""
    try:
        n = cpus or len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_PROCESSES))


def run_shares(work, shares, errors=()):
    """Call ``work(share)`` for each of ``shares`` in parallel (see the module docstring) and wait for all.
    An exception of this process's share is re-raised as it is; a child's is raised here as the same type
    if it is one of ``errors`` (exception types made from their message alone), else as RuntimeError with
    the child's traceback."""
    shares = list(shares)
    children = []
    try:
        for share in shares[1:]:
            try:
                read, write = os.pipe()
            except OSError:   # no more file descriptors: this process does the share
                work(share)
                continue
            try:
                pid = os.fork()
            except OSError:   # no more processes: this process does the share
                os.close(read)
                os.close(write)
                work(share)
                continue
            if pid == 0:   # the child
                os.close(read)
                code = 0
                try:
                    work(share)
                except BaseException as err:   # reported to the parent, whatever it is
                    code = 1
                    kind = type(err).__name__ if type(err) in errors else ""
                    _write_all(write, f"{kind}\0{err}\0{traceback.format_exc()}".encode("utf-8", "replace"))
                os._exit(code)
            os.close(write)
            children.append((pid, read))
        if shares:
            work(shares[0])
    finally:
        failures = [f for f in (_wait(pid, read) for pid, read in children) if f]
    if failures:
        kind, message, trace = failures[0]
        known = {t.__name__: t for t in errors}
        if kind in known:
            raise known[kind](message)
        raise RuntimeError(f"a forked worker failed: {message}\n{trace}")


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _wait(pid, read):
    """(type name, message, traceback) of a child that failed, or None."""
    with os.fdopen(read, "rb") as f:
        payload = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    parts = payload.split("\0", 2)
    if len(parts) == 3:
        return tuple(parts)
    return ("", f"it ended with status {code}", "")
