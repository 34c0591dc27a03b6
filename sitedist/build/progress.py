"""Show the scheduler's events to the admin: a live view, plain timestamped lines, or JSON lines.

- ``live`` (a terminal): finished packages scroll by as lines, and below them a block redrawn in place
  with ANSI escapes (at most ~10 times a second, and every second for the clocks): done/total,
  elapsed time, and each running build with its elapsed time and the last line of its output, cut to
  the terminal width.
- ``plain`` (cron, CI logs): one timestamped line per start, done, failed and skipped.
- ``json``: every event as one JSON object per line, then a ``summary`` object on ``close()``.
- ``quiet``: nothing.

With the Slurm executor (build/slurm.py) a build is shown from its submission: ``queued`` (pending,
with Slurm's reason), then ``start`` with its node and job id, then done or failed.
"""

import json
import os
import re
import sys
import threading
import time

MODES = ("live", "plain", "json", "quiet")
REDRAW_INTERVAL = 0.1
ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def format_duration(seconds):
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def clean_line(line):
    """What a terminal would show last of a build's output line: no escapes, no control characters."""
    line = ESCAPE.sub("", line.rstrip("\r\n").rsplit("\r", 1)[-1])
    return CONTROL.sub("", line.expandtabs()).strip()


def _terminal_size(stream):
    """(columns, rows) of the stream's terminal; 80x24 when unknown (not a terminal, or a pty of size 0)."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = rows = 0
    return columns or 80, rows or 24


class Progress:
    """The ``events`` callback of ``run_jobs``; call ``close()`` when the run is over."""

    def __init__(self, total: int, stream=None, mode: str = "auto"):
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "live" if isatty is not None and isatty() else "plain"
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of auto, {', '.join(MODES)}; not {mode!r}")
        self.mode, self.total = mode, total
        self.counts = {"done": 0, "failed": 0, "skipped": 0}
        self.running = {}  # key -> [label, start, last line]
        self.queued = set()  # keys of running entries that are batch jobs not started yet
        self.began = time.time()
        self._lock = threading.Lock()
        self._drawn = 0  # lines of the live block on screen, the cursor just below them
        self._last_draw = 0.0
        self._dirty = False
        self._closed = threading.Event()
        self._ticker = None
        if mode == "live":
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def __call__(self, event: dict):
        with self._lock:
            kind, key = event["event"], event["key"]
            if kind == "queued":  # a batch job submitted (executor slurm): shown as waiting until it starts
                self.running[key] = [event.get("label") or key, event["time"], f"pending (job {event.get('job')})"]
                self.queued.add(key)
            elif kind == "start":
                self.queued.discard(key)
                where = f"running on {event['node']}, job {event.get('job')}" if event.get("node") else ""
                self.running[key] = [event.get("label") or key, event["time"], where]
            elif kind == "output":
                if key in self.running:
                    self.running[key][2] = clean_line(event.get("line", ""))
            elif kind in self.counts:
                self.running.pop(key, None)
                self.queued.discard(key)
                self.counts[kind] += 1
            if self.mode == "json":
                self._write(json.dumps(event, default=str) + "\n")
            elif self.mode == "plain" and kind != "output":
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
                self._write(f"{stamp} {self._finished():>{len(str(self.total))}}/{self.total} {describe(event)}\n")
            elif self.mode == "live":
                if kind in ("done", "failed", "skipped"):
                    self._draw(above=describe(event))
                elif kind == "start" or time.time() - self._last_draw >= REDRAW_INTERVAL:
                    self._draw()
                else:
                    self._dirty = True

    def close(self):
        """Stop redrawing, clear the live block and write the summary (not in quiet mode)."""
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            elapsed = time.time() - self.began
            c = self.counts
            summary = (f"{c['done']} built, {c['failed']} failed, {c['skipped']} skipped of {self.total} "
                       f"in {format_duration(elapsed)}")
            if self.mode == "json":
                self._write(json.dumps({"event": "summary", "time": time.time(), "total": self.total,
                                        "elapsed": elapsed, **c}) + "\n")
            elif self.mode == "plain":
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                self._write(f"{stamp} {self._finished()}/{self.total} finished: {summary}\n")
            elif self.mode == "live":
                self._clear()
                self._write(f"finished: {summary}\n")

    def _finished(self):
        return sum(self.counts.values())

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def _tick(self):
        while not self._closed.wait(REDRAW_INTERVAL):
            with self._lock:
                if self._dirty or time.time() - self._last_draw >= 1.0:
                    self._draw()

    def _clear(self):
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}A\r\x1b[J")
            self._drawn = 0

    def _draw(self, above=None):
        columns, rows = _terminal_size(self.stream)
        now = time.time()
        c = self.counts
        queued = f", {len(self.queued)} queued" if self.queued else ""
        head = (f"[{self._finished()}/{self.total}] {format_duration(now - self.began)}  "
                f"{len(self.running) - len(self.queued)} building{queued}, {c['done']} built, {c['failed']} failed, "
                f"{c['skipped']} skipped")
        lines = [head]
        room = max(1, rows - 2)
        builds = sorted(self.running.values(), key=lambda r: r[1])
        width = max((len(b[0]) for b in builds), default=0)
        for label, start, last in builds[:room]:
            lines.append(f"  {label:<{width}} {format_duration(now - start):>7}  {last}")
        if len(builds) > room:
            lines.append(f"  ... and {len(builds) - room} more")
        text = f"\x1b[{self._drawn}A\r" if self._drawn else ""
        if above is not None:
            text += above[:columns - 1] + "\x1b[K\n"
        text += "".join(line[:columns - 1] + "\x1b[K\n" for line in lines) + "\x1b[J"
        self._write(text)
        self._drawn = len(lines)
        self._last_draw = now
        self._dirty = False


def describe(event):
    """One event in words, as plain mode prints it."""
    kind, label = event["event"], event.get("label") or event["key"]
    if kind == "queued":
        return f"queued {label} as Slurm job {event.get('job')} (-j{event.get('jobs', 1)})"
    if kind == "start":
        where = f" on {event['node']}, Slurm job {event.get('job')}" if event.get("node") else ""
        return f"start {label} (-j{event.get('jobs', 1)}){where}"
    if kind == "done":
        return f"done {label} in {format_duration(event.get('duration', 0))}"
    if kind == "failed":
        error = (event.get("error") or "").strip().splitlines()
        where = f" (Slurm job {event.get('job')} on {event.get('node') or 'no node'})" if event.get("job") else ""
        return (f"FAILED {label} after {format_duration(event.get('duration', 0))}{where}"
                + (f": {error[0]}" if error else ""))
    if kind == "skipped":
        return f"skipped {label}: {event.get('reason', '')}"
    return f"{kind} {label}"
