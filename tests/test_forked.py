"""core.forked: shares of work done by forked processes at once, their failures reported to the caller."""

import os
import signal

import pytest

from sitedist.core import forked
from sitedist.errors import ModulesError


def writer(directory, fail=None):
    def work(share):
        for name in share:
            if name == fail:
                fail_with(name)
            (directory / name).write_text(str(os.getpid()))
    return work


def fail_with(name):
    if name.startswith("modules"):
        raise ModulesError(f"module {name}: its description holds '\\x1b'")
    if name.startswith("value"):
        raise ValueError("not a number")
    os.kill(os.getpid(), signal.SIGKILL)


def test_every_share_is_done_each_by_its_own_process(tmp_path):
    shares = [[f"a{i}", f"b{i}"] for i in range(3)]
    forked.run_shares(writer(tmp_path), shares)
    made = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert sorted(made) == sorted(n for s in shares for n in s)
    pids = [{made[n] for n in share} for share in shares]
    assert all(len(p) == 1 for p in pids) and len(set().union(*pids)) == 3
    assert pids[0] == {str(os.getpid())}   # the first share is this process's


@pytest.mark.parametrize("fail, raised, words", [
    ("modules-x", ModulesError, ["module modules-x: its description holds"]),
    ("value-x", RuntimeError, ["a forked worker failed: not a number", "ValueError", "Traceback"]),
    ("killed-x", RuntimeError, ["ended with status -9"]),
])
def test_a_childs_failure_is_raised_here_after_all_have_ended(tmp_path, fail, raised, words):
    shares = [["first"], [fail, "never"], ["third"]]
    with pytest.raises(raised) as info:
        forked.run_shares(writer(tmp_path, fail), shares, errors=(ModulesError,))
    if raised is ModulesError:
        assert type(info.value) is ModulesError and str(info.value) == f"module {fail}: its description holds '\\x1b'"
    for word in words:
        assert word in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "third"]   # the others finished


def test_this_processs_failure_is_raised_as_it_is_once_the_children_ended(tmp_path):
    with pytest.raises(ValueError, match="not a number"):
        forked.run_shares(writer(tmp_path, "value-here"), [["value-here"], ["second"]])
    assert (tmp_path / "second").exists()


def test_processes_is_bounded():
    assert forked.processes(1) == 1 and forked.processes(64) == forked.MAX_PROCESSES
    assert 1 <= forked.processes() <= forked.MAX_PROCESSES
