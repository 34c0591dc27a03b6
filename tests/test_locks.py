"""StoreLock against real processes: exclusion, holder info, waiting, stale takeover, races, errors; and
another user's live process hidden by /proc hidepid=2 counts as alive (locks, GC roots, leftovers)."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from sitedist.core import locks
from sitedist.core.locks import StoreLock, describe_holder, is_stale, read_holder
from sitedist.core.store import Store
from sitedist.errors import LockError, StoreError

# A child process driven by one command per stdin line, answering one JSON line per command:
#   acquire PATH TIMEOUT       take a lock (TIMEOUT "none" waits forever) and keep it
#   release                    release it
#   count PATH FILE N          N times: under the lock, increment the number in FILE
CHILD = r"""
import json, os, sys
from sitedist.core.locks import StoreLock
from sitedist.errors import SitedistError

lock = None
for line in sys.stdin:
    cmd, *args = line.split()
    out = {"ok": True, "pid": os.getpid()}
    try:
        if cmd == "acquire":
            lock = StoreLock(args[0], what="child " + str(os.getpid()), poll=0.02,
                             timeout=None if args[1] == "none" else float(args[1]))
            lock.acquire()
        elif cmd == "release":
            lock.release()
        elif cmd == "count":
            path, counter, n = args[0], args[1], int(args[2])
            out["overlaps"] = 0
            for _ in range(n):
                with StoreLock(path, what="counting", poll=0.005):
                    try:
                        os.close(os.open(counter + ".inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        out["overlaps"] += 1
                    with open(counter) as f:
                        value = int(f.read())
                    os.sched_yield()
                    with open(counter, "w") as f:
                        f.write(str(value + 1))
                    os.unlink(counter + ".inside")
    except SitedistError as e:
        out = {"ok": False, "pid": os.getpid(), "type": type(e).__name__, "error": str(e)}
    print(json.dumps(out), flush=True)
"""


class Child:
    def __init__(self, stderr=None):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, bufsize=0)
        self.pid = self.proc.pid
        self._buf = b""

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")

    def answer(self, deadline=30.0):
        end = time.monotonic() + deadline
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            assert left > 0 and select.select([self.proc.stdout], [], [], left)[0], "child did not answer"
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "child exited"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, line, deadline=30.0):
        self.send(line)
        return self.answer(deadline)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def children():
    made = []

    def make(n=1, stderr=None):
        new = [Child(stderr) for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for c in made:
        c.close()


def wait_until(cond, deadline=10.0, what="condition"):
    end = time.monotonic() + deadline
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def fake_foreign_holder(path, heartbeat_age, beat=0.05):
    """A lock held in this process whose info claims another host, last heartbeat ``heartbeat_age`` s ago,
    and heartbeats every ``beat`` s (waiters watch for two beats before they take over)."""
    holder = StoreLock(path, what="building hdf5 1.14.3 on node-b", heartbeat=3600, stale_after=7200).acquire()
    info_path = str(path) + ".info"
    with open(info_path) as f:
        info = json.load(f)
    info.update(host="node-b.example", machine="another-boot", beat=beat)
    with open(info_path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(info_path + ".tmp", info_path)
    old = time.time() - heartbeat_age
    os.utime(info_path, (old, old))
    return holder


# --- exclusion ----------------------------------------------------------------------------------

def test_mutual_exclusion_across_processes(tmp_path, children):
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = children(4)
    for c in procs:
        c.send(f"count {tmp_path / 'x.lock'} {counter} 20")
    answers = [c.answer(60) for c in procs]
    assert all(a["ok"] for a in answers), answers
    assert sum(a["overlaps"] for a in answers) == 0
    assert counter.read_text() == "80"
    assert sorted(os.listdir(tmp_path)) == ["counter"]


def test_mutual_exclusion_across_threads(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    inside = threading.Lock()
    overlaps = []

    def work():
        for _ in range(25):
            with StoreLock(tmp_path / "x.lock", what="counting", poll=0.001):
                if not inside.acquire(blocking=False):
                    overlaps.append(1)
                value = int(counter.read_text())
                time.sleep(0)
                counter.write_text(str(value + 1))
                inside.release()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not overlaps
    assert counter.read_text() == "100"


# --- holder info, heartbeat, waiting ------------------------------------------------------------

def test_holder_info_while_held_and_gone_after_release(tmp_path):
    path = tmp_path / "zlib.lock"
    assert read_holder(path) is None
    lock = StoreLock(path, what="building zlib 1.2.13-abc123")
    with lock:
        assert lock.held
        info = read_holder(path)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert info["what"] == "building zlib 1.2.13-abc123" and info["token"] == lock.token
        assert info["user"] and info["since"] and not info["taking"]
        assert not is_stale(info, 600)
        os.chmod(path, 0o600)  # an admin fixing permissions does not make the lock look unowned
        assert read_holder(path)["token"] == lock.token
        line = describe_holder(info)
        assert f"pid {os.getpid()}" in line and "building zlib 1.2.13-abc123" in line and info["since"] in line
    assert not lock.held
    assert read_holder(path) is None
    assert os.listdir(tmp_path) == []


def test_heartbeat_refreshes_the_info_file(tmp_path):
    path = tmp_path / "x.lock"
    with StoreLock(path, what="long build", heartbeat=0.05, stale_after=10):
        first = read_holder(path)["heartbeat"]
        os.utime(str(path) + ".info", (first - 100, first - 100))
        wait_until(lambda: read_holder(path)["heartbeat"] > first - 100, what="a heartbeat")


def test_on_wait_reports_the_holder_then_the_waiter_gets_the_lock(tmp_path, children, monkeypatch):
    monkeypatch.setattr(locks, "WAIT_REPORT_EVERY", 0.05)
    path = tmp_path / "x.lock"
    (holder,) = children()
    assert holder.cmd(f"acquire {path} none")["ok"]
    seen = []
    waiter = StoreLock(path, what="waiting", on_wait=seen.append, poll=0.01)
    t = threading.Thread(target=waiter.acquire)
    t.start()
    wait_until(lambda: len(seen) >= 3, what="repeated on_wait calls")
    assert all(i["pid"] == holder.pid and i["what"] == f"child {holder.pid}" for i in seen)
    assert holder.cmd("release")["ok"]
    t.join(10)
    assert waiter.held and read_holder(path)["token"] == waiter.token
    waiter.release()


def test_timeout_names_holder_pid_host_and_lock(tmp_path, children):
    path = tmp_path / "x.lock"
    (holder,) = children()
    assert holder.cmd(f"acquire {path} none")["ok"]
    with pytest.raises(LockError) as e:
        StoreLock(path, what="waiting", timeout=0.3, poll=0.02).acquire()
    msg = str(e.value)
    assert f"pid {holder.pid}" in msg and socket.gethostname() in msg and str(path) in msg
    assert f"kill {holder.pid}" in msg


# --- staleness and takeover ---------------------------------------------------------------------

def test_sigkilled_holder_is_taken_over(tmp_path, children):
    path = tmp_path / "x.lock"
    (holder,) = children()
    assert holder.cmd(f"acquire {path} none")["ok"]
    info = read_holder(path)
    assert info["pid"] == holder.pid and not is_stale(info, 600)
    holder.proc.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not reaped
    assert is_stale(info, 600)
    holder.proc.wait()
    assert is_stale(info, 600)
    with StoreLock(path, what="after the crash", timeout=10, poll=0.02) as lock:
        assert read_holder(path)["token"] == lock.token


def test_local_pid_reuse_is_stale():
    info = {"taking": False, "pid": os.getpid(), "host": socket.gethostname(), "machine": locks._machine(),
            "start": locks.psutil.Process().create_time()}
    assert not is_stale(info, 600)
    assert is_stale(dict(info, start=info["start"] - 3600), 600)
    # the same pid on another host says nothing about this process: only the heartbeat counts
    foreign = dict(info, host="node-b.example", start=0, heartbeat=time.time())
    assert not is_stale(foreign, 600)
    assert is_stale(foreign, 600, now=time.time() + 601)


def test_foreign_holder_with_old_heartbeat_is_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    stale = fake_foreign_holder(path, heartbeat_age=3600)
    info = read_holder(path)
    assert info["host"] == "node-b.example" and is_stale(info, 600)
    lock = StoreLock(path, what="taking over", timeout=10, poll=0.02).acquire()
    assert read_holder(path)["token"] == lock.token
    stale.release()  # the old holder finishing late must not remove the new holder's lock
    assert read_holder(path)["token"] == lock.token
    lock.release()
    assert os.listdir(tmp_path) == []


def test_old_heartbeat_that_moves_while_watched_is_not_taken_over(tmp_path):
    # after an NFS outage or a suspend, a live holder's heartbeat is old until its thread catches up
    path = tmp_path / "x.lock"
    holder = fake_foreign_holder(path, heartbeat_age=3600, beat=0.5)
    assert is_stale(read_holder(path), 600)
    seen = []
    waiter = StoreLock(path, what="waiting", timeout=2, poll=0.02, on_wait=seen.append)
    outcome = []

    def wait():
        try:
            waiter.acquire()
            outcome.append("taken over")
        except LockError:
            outcome.append("timed out")

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: seen, what="the waiter to see the holder")
    os.utime(str(path) + ".info")  # the holder's heartbeat resumes
    t.join(10)
    assert outcome == ["timed out"]
    assert read_holder(path)["token"] == holder.token
    holder.release()


def test_foreign_holder_with_fresh_heartbeat_is_not_taken_over(tmp_path):
    path = tmp_path / "x.lock"
    holder = fake_foreign_holder(path, heartbeat_age=5)
    seen = []
    with pytest.raises(LockError) as e:
        StoreLock(path, what="waiting", timeout=0.3, poll=0.02, on_wait=seen.append).acquire()
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and "node-b.example" in msg and "building hdf5" in msg
    assert f"remove {path} and {path}.info" in msg
    assert seen and seen[0]["host"] == "node-b.example"
    assert read_holder(path)["token"] == holder.token
    holder.release()


def test_lock_file_without_info_is_being_taken_then_stale(tmp_path):
    path = tmp_path / "x.lock"
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # as a holder killed before writing its info
    (tmp_path / "x.lock.info").write_text('{"pid": "../../etc", "what": null}')  # garbage is no holder info
    info = read_holder(path)
    assert info["taking"] and "just taking it" in describe_holder(info)
    assert not is_stale(info, 600)
    assert is_stale(info, 600, now=time.time() + locks.TAKING_GRACE + 1)
    with pytest.raises(LockError, match="If no sitedist process is running, remove"):
        StoreLock(path, what="waiting", timeout=0.2, poll=0.02).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with StoreLock(path, what="taking over", timeout=10, poll=0.02) as lock:
        assert read_holder(path)["token"] == lock.token


def test_a_waiter_acting_on_an_outdated_judgement_does_not_steal_the_lock(tmp_path):
    path = tmp_path / "x.lock"
    stale = fake_foreign_holder(path, heartbeat_age=3600)
    judged = read_holder(path)
    assert is_stale(judged, 600)
    first = StoreLock(path, what="first waiter", timeout=10, poll=0.02).acquire()
    # a second waiter judged the old holder stale just before the first one took over, and acts now
    late = StoreLock(path, what="second waiter", timeout=0, poll=0.02)
    late._take_over(judged)
    assert read_holder(path)["token"] == first.token
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        late.acquire()
    first.release()
    stale.release()
    assert os.listdir(tmp_path) == []


def test_waiters_racing_for_one_stale_lock_exactly_one_wins(tmp_path, children):
    stderr = open(tmp_path / "stderr", "w+")
    waiters = children(3, stderr=stderr)
    for round_ in range(6):
        path = tmp_path / "locks" / f"race{round_}.lock"
        path.parent.mkdir(exist_ok=True)
        stale = fake_foreign_holder(path, heartbeat_age=3600)
        for w in waiters:
            w.send(f"acquire {path} 0.5")
        answers = [w.answer() for w in waiters]
        winners = [a["pid"] for a in answers if a["ok"]]
        assert len(winners) == 1, answers
        assert read_holder(path)["pid"] == winners[0]
        for a in answers:
            if not a["ok"]:
                assert a["type"] == "LockError" and f"pid {winners[0]}" in a["error"]
        stale.release()
        assert read_holder(path)["pid"] == winners[0]
        assert next(w for w in waiters if w.pid == winners[0]).cmd("release")["ok"]
        assert os.listdir(path.parent) == [], f"round {round_} left files"
    stderr.seek(0)
    assert "taken over" not in stderr.read()  # no waiter ever lost a lock it held


# --- unusable lock directory --------------------------------------------------------------------

@pytest.fixture
def read_only_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                      capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only filesystem")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_read_only_lock_directory_fails_clearly_without_hanging(read_only_dir):
    path = read_only_dir / "locks" / "x.lock"
    errors = []

    def take():
        try:
            StoreLock(path, what="building", timeout=None).acquire()
        except Exception as e:  # collected for the asserts below
            errors.append(e)

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(15)
    assert not t.is_alive(), "acquire hung on a read-only lock directory"
    (e,) = errors
    assert isinstance(e, StoreError)
    assert str(path.parent) in str(e) and "write access" in str(e)
    assert "Read-only file system" in str(e) or "Permission denied" in str(e)


# --- process liveness where /proc hides other users' processes -----------------------------------

HIDDEN_CHECKS = r"""
import json, os, socket, sys, time
from sitedist.core import locks
from sitedist.core.gcroots import live_roots
from sitedist.core.generations import point, remove_leftovers
from sitedist.core.processes import pid_alive
from sitedist.core.store import Store
from sitedist.ops.verify import _leftover_findings

pid, start, dead, work = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = Store(os.path.join(work, "store"))
info = {"taking": False, "host": socket.gethostname(), "machine": locks._machine(), "pid": pid, "start": start,
        "heartbeat": time.time() - 3600}
point(os.path.join(work, "current"), "generations/1")
print(json.dumps({
    "visible": os.path.exists(f"/proc/{pid}"),
    "alive": [pid_alive(pid), pid_alive(pid, start), pid_alive(dead)],
    "lock stale": locks.is_stale(info, 600),
    "roots": sorted(live_roots(store)),
    "switch tmp kept": os.path.lexists(os.path.join(work, f"current.tmp-{pid}")),
    "staging kept": (remove_leftovers(os.path.join(work, "generations")),
                     os.path.isdir(os.path.join(work, "generations", f".staging-2-{pid}")))[1],
    "trash findings": [f.path for f in _leftover_findings(store, {}, time.time()) if f.kind == "trash"],
}))
"""


def test_another_users_process_hidden_by_proc_hidepid_counts_as_alive(tmp_path):
    """Another admin's live sync, invisible in a /proc mounted hidepid=2: its lock is not stale, its GC
    root counts, its temporary switch link, staging directory and trash entry are left alone."""
    import psutil

    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
    try:
        start = psutil.Process(other.pid).create_time()
        dead = subprocess.Popen(["true"])
        dead.wait()
        store = Store(str(tmp_path / "store"))
        store.init()
        store.write_json_atomic(os.path.join(store.gcroots_dir, "inuse-other.json"),
                                {"prefixes": [], "pid": other.pid, "host": socket.gethostname(), "created": start,
                                 "started": time.time(), "what": "sync"})
        os.makedirs(os.path.join(store.trash_dir, f"gc-{other.pid}-abcd1234"))
        os.makedirs(tmp_path / "generations" / "1")
        os.makedirs(tmp_path / "generations" / f".staging-2-{other.pid}")
        os.symlink("generations/1", tmp_path / f"current.tmp-{other.pid}")
        # As root outside group 0 without CAP_SYS_PTRACE and CAP_KILL: like another admin, for hidepid.
        checks = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t proc -o hidepid=2 proc /proc && exec setpriv --regid=65534 --clear-groups '
             '--bounding-set=-sys_ptrace,-kill --inh-caps=-all "$@"', "sh",
             sys.executable, "-c", HIDDEN_CHECKS, str(other.pid), repr(start), str(dead.pid), str(tmp_path)],
            capture_output=True, text=True)
        if checks.returncode != 0 and "mount" in checks.stderr:
            pytest.skip(f"cannot mount a hidepid /proc here: {checks.stderr.strip()}")
        assert checks.returncode == 0, checks.stderr
        found = json.loads(checks.stdout)
    finally:
        other.kill()
        other.wait()
    assert found == {"visible": False, "alive": [True, True, False], "lock stale": False,
                     "roots": ["inuse-other.json"], "switch tmp kept": True, "staging kept": True,
                     "trash findings": []}


def test_one_takeover_protocol_a_marker_naming_a_dead_pid_does_not_free_a_held_lock(tmp_path):
    """Only sitedist's protocol decides whether a lock is free. A lock file whose content looks like
    filelock's marker of a dead process (an old sitedist used filelock's SoftFileLock, whose own recovery
    reclaims such a marker) stays held while its holder info names a live holder."""
    path = str(tmp_path / "x.lock")
    holder = StoreLock(path, what="building zlib").acquire()
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        info = read_holder(path)
        with open(path, "w") as f:   # keeps the inode; the identity is restored below
            f.write(f"{dead.pid}\n{socket.gethostname()}\n")
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, int(info["lock"].split(":")[1])))
        assert read_holder(path)["token"] == holder.token
        with pytest.raises(LockError, match="held by pid"):
            StoreLock(path, what="waiter", timeout=0.3, poll=0.02).acquire()
        assert holder.held and read_holder(path)["token"] == holder.token
    finally:
        holder.release()
    assert not os.path.exists(path)
