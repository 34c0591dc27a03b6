"""Progress output of a real scheduler run, in each mode: lines that parse, JSON that loads, a live view
that stays within the terminal width."""

import io
import json
import re

from sitedist.build.progress import Progress, clean_line
from sitedist.build.scheduler import Job, run_jobs

PLAIN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+)/(\d+) (start|done|FAILED|skipped|finished)(?: |:)(.*)$")


def noop(ctx):
    ctx.output("compiling " + "x" * 300 + "\x1b[1mbold\x1b[0m\tend")


def fail(ctx):
    ctx.output("checking for cc... no")
    raise RuntimeError("configure failed\nsecond line")


def jobs():
    return [Job("a-1", (), noop, label="a 1"), Job("b-1", ("a-1",), noop, label="b 1"),
            Job("bad-1", (), fail, label="bad 1", estimate=5), Job("dep-1", ("bad-1",), noop, label="dep 1")]


def run(mode):
    stream = io.StringIO()
    progress = Progress(total=4, stream=stream, mode=mode)
    result = run_jobs(jobs(), slots=2, keep_going=True, events=progress)
    progress.close()
    return result, stream.getvalue()


def test_plain_lines_parse():
    result, text = run("plain")
    parsed = [PLAIN.match(line) for line in text.splitlines()]
    assert all(parsed), text
    words = [(m.group(3), m.group(4).split(" (")[0].split(" in ")[0].split(" after ")[0]) for m in parsed]
    assert ("start", "a 1") in words and ("done", "b 1") in words and ("FAILED", "bad 1") in words
    assert ("skipped", "dep 1: needs bad-1, which failed") in words
    assert [m.group(2) for m in parsed] == ["4"] * len(parsed)
    last = parsed[-1]
    assert last.group(3) == "finished" and last.group(1) == "4"
    assert "2 built, 1 failed, 1 skipped of 4" in last.group(4)
    assert "FAILED bad 1 after" in text and ": configure failed" in text and "second line" not in text


def test_auto_is_plain_when_not_a_terminal():
    stream = io.StringIO()
    assert Progress(total=1, stream=stream).mode == "plain"


def test_json_lines_load():
    result, text = run("json")
    events = [json.loads(line) for line in text.splitlines()]
    summary = events.pop()
    assert summary["event"] == "summary"
    assert (summary["done"], summary["failed"], summary["skipped"], summary["total"]) == (2, 1, 1, 4)
    by_kind = {}
    for e in events:
        by_kind.setdefault(e["event"], []).append(e["key"])
    assert sorted(by_kind["start"]) == ["a-1", "b-1", "bad-1"]
    assert sorted(by_kind["done"]) == ["a-1", "b-1"] and by_kind["failed"] == ["bad-1"]
    assert by_kind["skipped"] == ["dep-1"] and "output" in by_kind
    failed = next(e for e in events if e["event"] == "failed")
    assert failed["error"].startswith("configure failed") and failed["duration"] >= 0


def test_live_view_redraws_in_place_within_width():
    result, text = run("live")
    assert "\x1b[" in text  # redrawn with ANSI escapes
    screen_lines = re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", text).replace("\r", "\n").split("\n")
    assert max(len(line) for line in screen_lines) < 80  # StringIO has no terminal: 80 columns
    assert "FAILED bad 1" in text and "skipped dep 1: needs bad-1, which failed" in text
    assert text.rstrip().endswith("finished: 2 built, 1 failed, 1 skipped of 4 in " + text.rstrip().split(" in ")[-1])


def test_quiet_writes_nothing():
    assert run("quiet")[1] == ""


def test_clean_line_keeps_what_a_terminal_shows():
    assert clean_line("50%\r100% done\n") == "100% done"
    assert clean_line("\x1b[32mok\x1b[0m\tyes") == "ok      yes"


def test_batch_jobs_are_shown_from_submission_with_their_node_and_job():
    """The events of the Slurm executor (build/slurm.py): queued, then start on a node, then done or failed."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def events(progress):
        progress({"event": "queued", "key": "a", "label": "zlib 1.3", "time": 1.0, "job": "12", "jobs": 2})
        progress({"event": "queued", "key": "b", "label": "hello 2.10", "time": 1.0, "job": "13", "jobs": 2})
        progress({"event": "start", "key": "a", "label": "zlib 1.3", "time": 2.0, "job": "12", "node": "cn01",
                  "jobs": 2, "slot": 0})
        progress({"event": "failed", "key": "a", "label": "zlib 1.3", "time": 3.0, "duration": 1.0,
                  "error": "boom", "job": "12", "node": "cn01"})
        progress.close()

    plain = io.StringIO()
    events(Progress(total=2, stream=plain, mode="plain"))
    lines = [re.sub(r"^\S+ \S+ +\d+/\d+ ", "", line) for line in plain.getvalue().splitlines()]
    assert lines[:4] == ["queued zlib 1.3 as Slurm job 12 (-j2)", "queued hello 2.10 as Slurm job 13 (-j2)",
                         "start zlib 1.3 (-j2) on cn01, Slurm job 12",
                         "FAILED zlib 1.3 after 1.0s (Slurm job 12 on cn01): boom"]

    live = Terminal()
    events(Progress(total=2, stream=live, mode="live"))
    screen = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", live.getvalue())
    assert "1 building, 1 queued" in screen and "running on cn01, job 12" in screen, screen
    assert "0 building, 1 queued, 0 built, 1 failed" in screen and "hello 2.10" in screen, screen
