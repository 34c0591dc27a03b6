"""Writing a file by rename (core.durable.write_atomic), the one function every caller uses: a reader
sees the old file or the whole new one, the temporary file is always a new file of this writer (never
a link or a file planted at its name), it is removed when writing fails, and modes hold whatever the
umask."""

import os
import threading
import types

import pytest

from sitedist.core import durable
from sitedist.core.durable import write_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def fixed_names(monkeypatch, *numbers):
    """Make the temporary names predictable: ``<path>.tmp-<pid>-<n>`` for each n in turn."""
    monkeypatch.setattr(durable, "time", types.SimpleNamespace(monotonic_ns=iter(numbers).__next__))
    return lambda path, n: f"{path}.tmp-{os.getpid()}-{n}"


def test_bytes_text_and_pieces_are_written_as_given(tmp_path):
    path = str(tmp_path / "f")
    write_atomic(path, b"\x00bytes\xff")
    assert open(path, "rb").read() == b"\x00bytes\xff"
    write_atomic(path, "ünïcode\n")
    assert open(path, "rb").read() == "ünïcode\n".encode()
    write_atomic(path, [b"head\n", memoryview(b"body"), "-tail"])
    assert open(path, "rb").read() == b"head\nbody-tail"
    assert os.listdir(tmp_path) == ["f"]


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(str(path), [b"half of the new", 42])   # the second piece cannot be written
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_a_full_disk_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        write_atomic(str(path), b"new", durable=True)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_durable_flushes_the_data_before_the_rename(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda src, dst: events.append(("replace", src)) or real_replace(src, dst))
    path = str(tmp_path / "f")
    write_atomic(path, b"data", durable=True)
    assert [e[0] for e in events] == ["fsync", "replace"] and events[0][1] == events[1][1]
    events.clear()
    write_atomic(path, b"data")
    assert [e[0] for e in events] == ["replace"]


def test_a_reader_sees_the_old_file_or_the_whole_new_one(tmp_path):
    path = str(tmp_path / "f")
    size = 1 << 20
    write_atomic(path, b"a" * size)
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            data = open(path, "rb").read()
            seen.add((len(data), data[:1], data[-1:], data.count(data[:1])))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            write_atomic(path, [b"ab"[i % 2:i % 2 + 1] * (size // 2)] * 2)
    finally:
        stop.set()
        reader.join()
    assert seen and all(n == size and first == last and count == size for n, first, last, count in seen), seen


def test_a_link_or_file_planted_at_the_temporary_name_is_left_alone(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = str(tmp_path / "f")
    name = fixed_names(monkeypatch, 7, 8, 9)
    os.symlink(victim, name(path, 7))                       # a link to someone's file
    os.symlink(tmp_path / "nowhere", name(path, 8))         # a dangling link: O_CREAT would create its target
    write_atomic(path, b"new", mode=0o600)
    assert open(path, "rb").read() == b"new" and not os.path.islink(path)
    assert victim.read_text() == "precious" and not (tmp_path / "nowhere").exists()
    assert os.readlink(name(path, 7)) == str(victim)        # not ours: not removed either

    other = name(path, 10)                                   # another writer's temporary file
    with open(other, "w") as f:
        f.write("another writer's")
    fixed_names(monkeypatch, 10, 11)
    write_atomic(path, b"newer")
    assert open(other).read() == "another writer's" and open(path, "rb").read() == b"newer"


def test_modes_hold_whatever_the_umask(tmp_path, umask):
    path = str(tmp_path / "f")
    umask(0o077)
    write_atomic(path, b"x", mode=0o644)                     # e.g. the Lmod cache: every user reads it
    assert os.stat(path).st_mode & 0o7777 == 0o644
    write_atomic(path, b"x")                                 # no mode: as open() makes files
    assert os.stat(path).st_mode & 0o7777 == 0o600
    umask(0o000)
    write_atomic(path, b"x", mode=0o600)                     # private: never wider, even a moment
    assert os.stat(path).st_mode & 0o7777 == 0o600
    write_atomic(path, b"x")
    assert os.stat(path).st_mode & 0o7777 == 0o666


def test_a_private_file_is_created_private_never_wider_for_a_moment(tmp_path, monkeypatch, umask):
    umask(0o000)
    opened, real_open = [], os.open
    monkeypatch.setattr(os, "open", lambda p, flags, mode=0o777, **k: opened.append((p, flags, mode))
                        or real_open(p, flags, mode, **k))
    write_atomic(str(tmp_path / "f"), b"secret", mode=0o600)
    [(tmp, flags, mode)] = opened
    assert mode == 0o600 and flags & os.O_EXCL and flags & os.O_NOFOLLOW and flags & os.O_CREAT
    assert os.stat(tmp_path / "f").st_mode & 0o777 == 0o600


def test_threads_writing_one_file_never_collide(tmp_path):
    path = str(tmp_path / "f")
    errors = []

    def write(n):
        try:
            for i in range(50):
                write_atomic(path, f"{n}:{i}\n" * 100)
        except BaseException as exc:   # noqa: B902 - reported to the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    lines = set(open(path).read().splitlines())
    assert len(lines) == 1 and lines.pop().endswith(":49")
    assert os.listdir(tmp_path) == ["f"]
