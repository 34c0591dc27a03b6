"""Store locks that work on local disks, NFS, Lustre and GPFS, and say who holds them.

One lock is one file ``P`` taken with ``O_CREAT | O_EXCL``: the file server decides atomically who
created it, on every filesystem the store supports. This module owns the whole protocol (creation,
holder info, heartbeat, takeover, release); no library's own stale-lock recovery acts on ``P``, so one
takeover protocol decides who may remove it (filelock's ``SoftFileLock`` reclaims a lock whose marker
names a dead pid, by rules of its own, which would be a second one). fcntl/flock
locks are not used: on NFS they go through a lock manager that hangs when a client dies (Spack's
experience), Lustre mounted ``localflock`` makes them node-local (two hosts both "hold" the lock) and
``noflock`` makes them fail. See admin_docs/shared-filesystems.md.

Files next to ``P`` (all in the lock's own directory, the only place a lock ever writes)::

    P                 the lock: an empty file; its identity (inode, mtime) names the holding
    P.info            JSON holder info: pid, host, machine, start, user, what, since, beat, token, lock
    P.takeover        short-lived guard, held while a stale ``P`` is being removed
    P.info.tmp-<p>-<n> the info being written (renamed onto ``P.info``)
    P.stale.<t>       a stale file being removed

Holder info. Right after creating ``P`` the holder writes ``P.info`` (tmp + rename, so it is never
read half-written). ``info["lock"]`` is the identity (inode and modification time) of the ``P`` it belongs
to, so info left behind by an earlier holder is never mistaken for the current one, even when the
filesystem gives the new ``P`` the old inode number. A ``P`` without matching info is being taken
right now: it counts as held, and as stale only once it is older than a grace period.
``info["token"]`` is unique per lock object, so two threads of one process (same pid) are told apart.

Staleness (:func:`is_stale`). A holder on this machine (same host name, boot and pid namespace) is
stale when its pid is gone, a zombie, or a different process (start time differs: pid reuse):
:func:`sitedist.core.processes.pid_alive` says so at once, also where /proc hides other users'
processes. A holder elsewhere cannot be probed: it touches ``P.info`` every ``heartbeat`` seconds
from a daemon thread, and is stale once that heartbeat is older than ``stale_after``. On NFS
the touch is stamped with the server's clock and compared with ours, so clocks must agree to well
within ``stale_after`` (NTP). A waiter also insists on seeing the heartbeat stand still for two of the
holder's beats (``info["beat"]``) before it takes over: after an NFS outage or a suspended VM every
heartbeat is old until the holders' threads catch up, and a live holder must not lose its lock then.

Takeover. Several waiters judge the same holder stale at about the same moment. If each removed
``P`` directly, a slow one would remove the lock a faster one had just taken. So removal happens
only under the guard ``P.takeover`` (taken with ``O_EXCL`` too, without waiting; as Mercurial breaks
its locks under ``lock.break``): the guard holder opens ``P`` (pinning its inode), re-reads the holder
info and re-judges it, and only if it is still the same stale holder removes ``P.info`` and then
``P``. ``P`` is removed by renaming it to a unique name and checking that the renamed file is the one
pinned; if it is not (the holder judged stale was alive after all, released, and another process
took ``P`` in the microseconds between), the file is linked back, and ``link`` never overwrites a
lock taken meanwhile. Waiters then race for ``P`` with ``O_EXCL`` as usual: exactly one wins. A guard
left by a waiter killed mid-takeover (it is held for milliseconds) is removed once older than
``GUARD_STALE`` (or ``stale_after`` if shorter), in the same rename-and-check way.

Readers of the store never take locks, and nothing here writes outside the lock's directory.
"""

import errno
import json
import logging
import os
import pwd
import socket
import threading
import time
import uuid
from datetime import datetime
from typing import Callable, Optional

import psutil

from sitedist.core.durable import write_atomic
from sitedist.core.processes import pid_alive
from sitedist.errors import LockError, StoreError

log = logging.getLogger(__name__)

TAKING_GRACE = 30.0  # a lock file without holder info is being taken, not stale, for this long
GUARD_STALE = 60.0  # a takeover guard older than this was left by a killed waiter
WAIT_REPORT_EVERY = 30.0  # seconds between on_wait calls while the holder stays the same
MODE = 0o644  # lock files and holder info are readable by every admin and waiter, whatever the umask
INFO_FIELDS = {"pid": int, "host": str, "machine": str, "start": (int, float), "user": str, "what": str,
               "since": str, "beat": (int, float), "token": str, "lock": str}


def _machine():
    """Where pids mean the same process: this boot of this kernel, this pid namespace."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _identity(st):
    # not the change time: chmod/chgrp by an admin must not make a held lock look unowned
    return f"{st.st_ino}:{st.st_mtime_ns}"


def _iso(t):
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _is_local(info):
    return info.get("host") == socket.gethostname() and info.get("machine") == _machine()


def _read_info(path, lock_fd):
    """Holder info of the lock open as ``lock_fd``: from ``path.info`` if it belongs to this lock file."""
    st = os.fstat(lock_fd)
    try:
        with open(path + ".info") as f:
            info = json.load(f)
            heartbeat = os.fstat(f.fileno()).st_mtime
        if isinstance(info, dict) and all(isinstance(info.get(k), t) for k, t in INFO_FIELDS.items()) \
                and info["lock"] == _identity(st):
            return dict(info, path=path, heartbeat=heartbeat, taking=False)
    except (OSError, ValueError):
        pass
    return {"path": path, "lock": _identity(st), "heartbeat": st.st_mtime, "taking": True}


def _open_lock(path):
    """Open the lock file read-only (this also revalidates NFS caches); None if there is none.

    A lock file we may not read (made by an old filelock under a strict umask) is opened with O_PATH.
    """
    try:
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except PermissionError:
            return os.open(path, os.O_PATH | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESTALE):
            return None
        raise


def read_holder(path) -> Optional[dict]:
    """Holder info of the lock file ``path``, None if the lock is free.

    The dict has the fields the holder wrote (pid, host, machine, start, user, what, since, beat:
    its heartbeat interval, token, lock), plus ``path``, ``heartbeat`` (epoch time of the last
    heartbeat) and ``taking`` (False). A lock file whose holder has not written its info yet gives
    only path, lock, heartbeat (the lock file's mtime) and ``taking=True``.
    """
    path = os.fspath(path)
    fd = _open_lock(path)
    if fd is None:
        return None
    try:
        return _read_info(path, fd)
    finally:
        os.close(fd)


def is_stale(info: dict, stale_after: float, now=None) -> bool:
    """Whether the holder in ``info`` (from :func:`read_holder`) is gone, so the lock may be taken over."""
    now = time.time() if now is None else now
    if info["taking"]:
        return now - info["heartbeat"] > min(stale_after, TAKING_GRACE)
    if not _is_local(info):
        return now - info["heartbeat"] > stale_after
    return not pid_alive(info["pid"], info["start"])


def describe_holder(info: dict) -> str:
    """One line naming the holder, for messages."""
    if info["taking"]:
        return f"a process that is just taking it (lock file created {_iso(info['heartbeat'])}, no holder info yet)"
    return f"pid {info['pid']} on host {info['host']} ({info['what']}) since {info['since']}, user {info['user']}"


def _watched_dead(info, seen):
    """Whether this waiter saw a remote holder's heartbeat stand still for two of its beats."""
    if info["taking"] or _is_local(info):
        return True
    first = seen.setdefault((info["token"], info["heartbeat"]), time.monotonic())
    return time.monotonic() - first >= 2 * info["beat"]


def _create(path):
    """Create the lock file ``path`` exclusively (and its directory): its identity if this call created
    it, None if it exists."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    except FileExistsError:
        return None
    try:
        os.fchmod(fd, MODE)   # readable by every admin and waiter, whatever the umask
        return _identity(os.fstat(fd))
    finally:
        os.close(fd)


def _remove_own(path, identity, token):
    """Remove the lock file ``path`` if it is still the one with ``identity`` (never one taken since)."""
    fd = _open_lock(path)
    if fd is None:
        return False
    try:
        return _identity(os.fstat(fd)) == identity and _remove_if_same(path, fd, token)
    finally:
        os.close(fd)


def _remove_if_same(path, fd, token):
    """Remove ``path`` if it still names the file open as ``fd``. True if it did.

    Rename first, then check: a rename is atomic, an unlink after a check is not. A different file
    renamed by mistake is linked back (``link`` never replaces a file created meanwhile).
    """
    aside = f"{path}.stale.{token}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if os.path.samestat(os.lstat(aside), os.fstat(fd)):
        os.unlink(aside)
        return True
    try:
        os.link(aside, path)
    except OSError as e:
        log.warning("lock %s: a live lock file was displaced while a stale one was removed: %s", path, e)
    os.unlink(aside)
    return False


class StoreLock:
    """An exclusive lock on ``path`` (a file in a lock directory), held by one object at a time.

    ``what`` says what the holder does ("building zlib 1.2.13-abc123"); waiters print it.
    ``timeout=None`` waits forever; otherwise :class:`LockError` after ``timeout`` seconds.
    ``on_wait(info)`` is called when a wait begins, when the holder changes, and every
    ``WAIT_REPORT_EVERY`` seconds. Not re-entrant; distinct objects exclude each other also
    within one process.
    """

    def __init__(self, path, what: str, timeout: Optional[float] = None, stale_after: float = 600.0,
                 heartbeat: float = 30.0, on_wait: Optional[Callable[[dict], None]] = None, poll: float = 0.2):
        if not 0 < heartbeat < stale_after:
            raise ValueError(f"heartbeat ({heartbeat}) must be positive and below stale_after ({stale_after})")
        self.path = os.path.abspath(os.fspath(path))
        self.what = what
        self.timeout = timeout
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self.on_wait = on_wait
        self.poll = poll
        self.token = uuid.uuid4().hex
        self._identity = None
        self._stop = None

    @property
    def held(self) -> bool:
        return self._stop is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> "StoreLock":
        if self.held:
            raise LockError(f"lock {self.path} is already held by this object (locks are not re-entrant)")
        started = time.monotonic()
        reported = None  # (token of the holder reported, when)
        seen = {}  # (token, heartbeat) of remote holders -> when this waiter first saw it
        info = None
        while not self._try_acquire():
            current = read_holder(self.path)
            if current is not None:
                info = current
                if is_stale(current, self.stale_after) and _watched_dead(current, seen) \
                        and self._take_over(current):
                    continue
                key = current.get("token", current["lock"])
                if self.on_wait and (reported is None or reported[0] != key
                                     or time.monotonic() - reported[1] >= WAIT_REPORT_EVERY):
                    reported = (key, time.monotonic())
                    self.on_wait(current)
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                raise LockError(self._timeout_message(info))
            time.sleep(self.poll)
        return self

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        self._stop = None
        try:
            info = read_holder(self.path)
            if info is not None and info.get("token") == self.token:
                os.unlink(self.path + ".info")
            elif info is None or info["lock"] != self._identity:
                log.warning("lock %s was taken over while this process held it", self.path)
        except OSError:
            pass
        finally:
            try:
                _remove_own(self.path, self._identity, self.token)
            except OSError as e:
                log.warning("lock %s: cannot remove the lock file: %s", self.path, e)

    # --- internals ----------------------------------------------------------------------------

    def _try_acquire(self):
        try:
            self._identity = _create(self.path)
        except OSError as e:
            raise StoreError(
                f"cannot create lock file {self.path}: {e.strerror}. Building or publishing needs write access "
                f"to the lock directory {os.path.dirname(self.path)}; reading a store needs no lock. If this is "
                f"another site's (upstream) store, build into your own store instead.") from e
        if self._identity is None:
            return False
        try:
            self._write_info()
        except OSError as e:
            try:
                _remove_own(self.path, self._identity, self.token)
            except OSError:
                pass
            raise StoreError(f"cannot write holder info for lock {self.path}: {e.strerror}") from e
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), name=f"heartbeat {self.path}", daemon=True).start()
        return True

    def _write_info(self):
        now = time.time()
        info = {"pid": os.getpid(), "host": socket.gethostname(), "machine": _machine(),
                "start": psutil.Process().create_time(), "user": _user(), "what": self.what,
                "since": _iso(now), "beat": self.heartbeat, "token": self.token, "lock": self._identity}
        write_atomic(self.path + ".info", json.dumps(info), mode=MODE)

    def _beat(self, stop):
        """Touch P.info every ``heartbeat`` seconds while held; stop if someone took the lock over."""
        while not stop.wait(self.heartbeat):
            try:
                info = read_holder(self.path)
                if info is None or info.get("token") != self.token:
                    log.warning("lock %s was taken over while this process held it", self.path)
                    return
                os.utime(self.path + ".info")
            except OSError as e:  # a network filesystem's hiccup: try again at the next beat
                log.warning("lock %s: heartbeat failed: %s", self.path, e)

    def _take_over(self, judged):
        """Remove the stale lock ``judged`` under the takeover guard. True if the lock file is gone."""
        guard_path = self.path + ".takeover"
        try:
            guard = _create(guard_path)
            if guard is None:
                self._clear_stale_guard(guard_path)
                return False
        except OSError:
            return False  # the next _try_acquire reports why the directory is unusable
        try:
            fd = _open_lock(self.path)
            if fd is None:
                return True
            try:
                current = _read_info(self.path, fd)
                if (current["lock"], current.get("token")) != (judged["lock"], judged.get("token")) \
                        or not is_stale(current, self.stale_after):
                    return False
                if not current["taking"]:
                    os.unlink(self.path + ".info")
                log.info("lock %s: taking over from stale holder: %s", self.path, describe_holder(current))
                return _remove_if_same(self.path, fd, self.token)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return False
        except PermissionError as e:
            raise StoreError(
                f"cannot take over the stale lock {self.path} ({describe_holder(judged)}): {e.strerror}. Remove "
                f"it as its owner or root; the lock directory must be writable by every admin of the store and "
                f"must not have the sticky bit (see admin_docs/shared-filesystems.md).") from e
        finally:
            try:
                _remove_own(guard_path, guard, self.token)
            except OSError:
                pass

    def _clear_stale_guard(self, guard_path):
        fd = _open_lock(guard_path)
        if fd is None:
            return
        try:
            if time.time() - os.fstat(fd).st_mtime > min(self.stale_after, GUARD_STALE):
                _remove_if_same(guard_path, fd, self.token)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _timeout_message(self, info):
        msg = f"timed out after {self.timeout:g}s waiting for lock {self.path}"
        if info is None:
            return msg + "; other processes kept taking it. Try again."
        msg += f", held by {describe_holder(info)}."
        if info["taking"]:
            return msg + f" If no sitedist process is running, remove {self.path}."
        if _is_local(info):
            return msg + f" That process runs on this host: wait for it to end, or stop it (kill {info['pid']})."
        age = time.time() - info["heartbeat"]
        return (msg + f" Its last heartbeat was {age:.0f}s ago; the lock is taken over by itself once that is "
                f"older than {self.stale_after:g}s. If that process is truly dead (host {info['host']} down or "
                f"the process killed), remove {self.path} and {self.path}.info.")
