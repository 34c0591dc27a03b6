"""``sitedist probe``: show the compilers, MPIs, build tools, Pythons, CUDA toolkits, GPUs and CPU target this
host offers as host packages."""

import json

import click

from sitedist.errors import HostError


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header] + rows]


def format_report(report):
    lines = ["Compilers"]
    lines += _table(("NAME", "VERSION", "LANGUAGES", "TRIPLE", "PREFIX", "DRIVERS"),
                    [(c.name, c.version, ",".join(c.languages), c.triple or "-", c.prefix,
                      " ".join(p for p in (c.cc, c.cxx, c.fc) if p)) for c in report.compilers]) \
        if report.compilers else ["  (none found)"]
    lines += ["", "MPI"]
    lines += _table(("NAME", "VERSION", "WRAPS", "LANGUAGES", "LIBRARIES", "WRAPPERS"),
                    [(m.name, m.version, m.wraps, ",".join(m.languages), ",".join(m.libraries[:2])
                      + (",..." if len(m.libraries) > 2 else ""),
                      " ".join(p for p in (m.mpicc, m.mpicxx, m.mpifc, m.mpirun) if p)) for m in report.mpis]) \
        if report.mpis else ["  (none found)"]
    lines += ["", "Build tools"]
    lines += _table(("NAME", "VERSION", "PATH"), [(t.name, t.version, t.executables[0][1]) for t in report.tools]) \
        if report.tools else ["  (none found)"]
    lines += ["", "Python (python3 on PATH, then in the searched directories; the first is the host Python)"]
    lines += _table(("IMPLEMENTATION", "VERSION", "ABI", "PLATFORM", "INTERPRETER", "FOUND AS"),
                    [(p.implementation, p.version, p.abi, p.platform, p.executable, p.found) for p in report.pythons]) \
        if report.pythons else ["  (none found)"]
    lines += ["", "CUDA toolkits"]
    lines += _table(("NAME", "VERSION", "PREFIX", "NVCC", "GPU CODES"),
                    [(c.name, c.version, c.prefix, c.nvcc, ",".join(c.archs)) for c in report.cuda]) \
        if report.cuda else ["  (none found: no nvcc on PATH, in the searched directories or in /usr/local/cuda*/bin)"]
    lines += ["", "GPUs"]
    lines += _table(("INDEX", "NAME", "COMPUTE CAPABILITY", "DRIVER"),
                    [(g.index, g.name, g.compute_capability, g.driver) for g in report.gpus]) \
        if report.gpus else ["  (none: nvidia-smi is absent or lists no GPU; builds do not need one)"]
    t = report.target
    lines += ["", "CPU target",
              f"  host: {t['name']} ({t['vendor']}, family {t['family']}); best generic target: {t['generic']}",
              f"  default build target: {t['family']} (generic: runs on every {t['family']} node)"]
    if report.problems:
        lines += ["", "Problems"] + [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
@click.option("--path", "dirs", multiple=True, metavar="DIR",
              help="Also search DIR (after $PATH); may be given several times.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds after which a probe that hangs is killed.")
def probe(as_json, dirs, timeout):
    """Find host compilers, MPI implementations, build tools, CUDA toolkits, GPUs and the CPU target.

    Problems (a broken or hanging wrapper) are printed and do not stop the probe; the exit status is
    non-zero only when no compiler and no MPI is found at all.
    """
    from sitedist.host.probe import probe_host

    report = probe_host(extra_dirs=dirs, timeout=timeout)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else format_report(report))
    if not report.compilers and not report.mpis:
        raise HostError("no compiler and no MPI found on PATH" + (f" or in {', '.join(dirs)}" if dirs else "")
                        + "; add their bin directories to PATH or pass --path DIR")
