"""CLI start-up benchmark: wall time of the whole ``sitedist --help`` process, median of 10.

Target (issue 7): under 0.15 s. Times the script installed beside this Python (see timing.py).

    python bench/bench_startup.py [--runs N]
"""

import argparse

from timing import median_wall, sitedist_command

TARGET = 0.15


def main(runs=10):
    command = sitedist_command()
    median_wall(command + ["--help"], 1)  # warm the page cache and the bytecode cache
    help_s = median_wall(command + ["--help"], runs)
    version_s = median_wall(command + ["--version"], runs)
    return {"command": " ".join(command), "runs": runs, "help_s": round(help_s, 4), "target_s": TARGET,
            "version_s": round(version_s, 4)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    figures = main(parser.parse_args().runs)
    for name, value in figures.items():
        print(f"{name:>10}: {value}")
    print(f"sitedist --help {figures['help_s']:.3f} s (target < {TARGET})")
