"""Helpers shared by the benchmarks: the sitedist command to time and whole-process wall times."""

import os
import shutil
import statistics
import subprocess
import sys
import time


def sitedist_command():
    """The ``sitedist`` script installed beside this Python, as an admin runs it. A pyenv shim on PATH
    would add its own start-up (bash plus ``pyenv exec``) to every figure, so it is used only as a last
    resort; without an installed script, ``python -m sitedist.cli.main``."""
    script = os.path.join(os.path.dirname(sys.executable), "sitedist")
    if os.access(script, os.X_OK):
        return [script]
    found = shutil.which("sitedist")
    return [found] if found else [sys.executable, "-m", "sitedist.cli.main"]


def wall_times(argv, runs):
    """Wall seconds of ``runs`` runs of ``argv`` (output discarded); RuntimeError if one fails."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - began)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return times


def median_wall(argv, runs):
    return statistics.median(wall_times(argv, runs))
