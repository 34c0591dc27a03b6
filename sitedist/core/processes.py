"""Whether a process of this machine still runs: one answer for locks, GC roots and leftovers.

On clusters /proc is often mounted ``hidepid=2``: another user's process (another admin's sync) has no
``/proc/<pid>``, so psutil reports it gone (NoSuchProcess), or, with ``hidepid=1``, unreadable
(AccessDenied). Neither means dead: ``kill(pid, 0)`` tells, since it fails with EPERM for a process
that exists but is not ours and with ESRCH for one that does not exist.
"""

import os

import psutil

START_TOLERANCE = 1.0  # psutil start times of one process may differ by up to a second between readers


def pid_alive(pid, start_time=None):
    """Whether process ``pid`` runs (a zombie does not). With ``start_time`` (psutil's create_time of
    the process meant), another process that got the same pid does not count; a process this user may
    not inspect counts as alive whatever its start time."""
    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if start_time is not None and abs(proc.create_time() - start_time) > START_TOLERANCE:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.ZombieProcess:
        return False
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
