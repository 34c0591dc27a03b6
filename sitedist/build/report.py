"""The build report of one sync: JSON for scripts and ``sitedist report``, and a self-contained HTML page
with a Gantt timeline (inline SVG) of which build ran when on which slot, the critical path marked.

Files in the reports directory: ``<UTC time>.json`` and ``.html`` per sync, and ``latest.json`` /
``latest.html``, each replaced atomically (written beside, then ``os.replace``).

``meta`` given to ``write_report``: ``config``, ``store``, ``slots``, ``started`` and ``finished``
(``time.time()`` values), and ``nodes``: key -> extra facts of that package, such as ``log`` and
``prefix``, copied into its entry. Other keys are kept as they are.
"""

import html
import json
import os
import time

from sitedist.build.progress import format_duration
from sitedist.core.durable import write_atomic
from sitedist.errors import StoreError

FORMAT = 1


def write_report(reports_dir, result, meta: dict) -> dict:
    """Write the report of ``result`` (a RunResult); returns {'json': path, 'html': path}."""
    report = build_report(result, meta)
    texts = {"json": json.dumps(report, indent=1, default=str) + "\n", "html": render_html(report)}
    os.makedirs(reports_dir, exist_ok=True)
    name = _reserve(reports_dir, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    paths = {}
    for ext, text in texts.items():
        paths[ext] = os.path.join(reports_dir, f"{name}.{ext}")
        write_atomic(paths[ext], text)
        write_atomic(os.path.join(reports_dir, f"latest.{ext}"), text)
    return paths


def load_report(reports_dir, which="latest") -> dict:
    """A report by name ('latest', a timestamp as in the file names) or by path."""
    which = str(which)
    name = which if which.endswith(".json") else f"{which}.json"
    path = which if os.sep in which else os.path.join(reports_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise StoreError(f"no build report {path}: reports are written by 'sitedist sync' when it builds "
                         f"something; see the names in {reports_dir}") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the build report {path}: {exc}") from None


def build_report(result, meta: dict) -> dict:
    """The report as a JSON-ready dict: meta, packages (ran ones by start time, then skipped ones),
    the critical path and a summary."""
    nodes = meta.get("nodes") or {}
    packages = []
    for rec in sorted(result.records, key=lambda r: r.start):
        entry = {"key": rec.key, "label": rec.label, "state": rec.state, "start": rec.start, "end": rec.end,
                 "duration": rec.end - rec.start, "slot": rec.slot, "jobs": rec.jobs,
                 "deps": list(result.deps.get(rec.key, ()))}
        if rec.key in result.failed:
            error = result.failed[rec.key]
            entry["error"] = str(error) or type(error).__name__
        packages.append(entry)
    for key, cause in result.skipped.items():
        packages.append({"key": key, "label": result.labels.get(key, key), "state": "skipped", "cause": cause,
                         "reason": result.reasons.get(key, f"needs {cause}, which failed"),
                         "deps": list(result.deps.get(key, ()))})
    for entry in packages:
        entry.update(nodes.get(entry["key"], {}))
        entry.update(result.facts.get(entry["key"], {}))
    starts = [r.start for r in result.records]
    ends = [r.end for r in result.records]
    started = meta.get("started", min(starts, default=time.time()))
    finished = meta.get("finished", max(ends, default=started))
    path = critical_path(result)
    durations = {r.key: r.end - r.start for r in result.records}
    return {
        "format": FORMAT,
        "meta": {**{k: v for k, v in meta.items() if k != "nodes"}, "started": started, "finished": finished},
        "ok": result.ok,
        "summary": {"done": len(result.succeeded), "failed": len(result.failed), "skipped": len(result.skipped),
                    "elapsed": finished - started, "build_span": max(ends, default=0) - min(starts, default=0),
                    "critical_path_time": sum(durations[k] for k in path),
                    "total_build_time": sum(durations.values())},
        "critical_path": path,
        "packages": packages,
    }


def critical_path(result):
    """The chain of dependent builds with the longest total time, first build first."""
    durations = {r.key: r.end - r.start for r in result.records}
    best, via = {}, {}
    for rec in sorted(result.records, key=lambda r: r.start):  # a dependency ends before its dependents start
        ran = [d for d in result.deps.get(rec.key, ()) if d in best]
        via[rec.key] = max(ran, key=best.get, default=None)
        best[rec.key] = durations[rec.key] + (best[via[rec.key]] if via[rec.key] else 0.0)
    key = max(best, key=best.get, default=None)
    path = []
    while key is not None:
        path.append(key)
        key = via[key]
    return path[::-1]


def format_report(report: dict) -> str:
    """The report as text for ``sitedist report``: a table, then failures and skips with reasons."""
    meta, summary, packages = report["meta"], report["summary"], report["packages"]
    lines = [f"build report: {_utc(meta.get('started'))} to {_utc(meta.get('finished'))} "
             f"({format_duration(summary['elapsed'])}, {meta.get('slots', '?')} slots)"]
    lines += [f"{name}: {meta[name]}" for name in ("config", "store") if meta.get(name)]
    rows = [("PACKAGE", "STATE", "TIME", "LOG")]
    rows += [(p["label"], p["state"], format_duration(p["duration"]), p.get("log", "")) if "duration" in p
             else (p["label"], p["state"], "-", "-") for p in packages]
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    lines.append("")
    lines += ["  ".join(f"{str(v):<{w}}" for v, w in zip(row, widths)) + "  " + str(row[3]) for row in rows]
    failed = [p for p in packages if p["state"] == "failed"]
    skipped = [p for p in packages if p["state"] == "skipped"]
    if failed:
        lines += ["", "failed:"]
        for p in failed:
            error = (p.get("error") or "").strip().splitlines()
            lines.append(f"  {p['label']}: {error[0] if error else 'failed'}")
            if p.get("log"):
                lines.append(f"    log: {p['log']}")
            if p.get("slurm_job"):
                lines.append(f"    Slurm job {p['slurm_job']} on {p.get('node') or 'no node'}, job log: {p.get('job_log')}")
    if skipped:
        lines += ["", "skipped:"]
        lines += [f"  {p['label']}: {p['reason']}" for p in skipped]
    path = report.get("critical_path") or []
    if path:
        labels = {p["key"]: p["label"] for p in packages}
        lines += ["", f"critical path ({format_duration(summary['critical_path_time'])}): "
                      + " -> ".join(labels.get(k, k) for k in path)]
    lines += ["", f"{summary['done']} built, {summary['failed']} failed, {summary['skipped']} skipped"]
    return "\n".join(lines)


def _utc(stamp):
    if isinstance(stamp, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return str(stamp)


def _reserve(directory, stamp):
    """A report name not used yet: the time stamp, with -2, -3 ... for syncs in the same second."""
    for n in range(1, 1000):
        name = stamp if n == 1 else f"{stamp}-{n}"
        try:
            with open(os.path.join(directory, f"{name}.json"), "x"):
                return name
        except FileExistsError:
            continue
    raise StoreError(f"too many build reports named {stamp}* in {directory}")


# --- HTML -----------------------------------------------------------------------------------------------

PLOT_WIDTH = 1000
LANE = 26
LEFT = 60
TOP = 30
PAGE_STYLE = """
body { font: 14px sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-top: 1em; }
td, th { padding: 2px 10px; text-align: left; border-bottom: 1px solid #ddd; }
.failed td { color: #b00; } .skipped td { color: #888; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px; vertical-align: middle; }
"""
SVG_STYLE = """
text { font: 11px sans-serif; pointer-events: none; }
rect.job { stroke: #fff; stroke-width: 1; }
rect.done { fill: #6a9fd8; } rect.failed { fill: #d9534f; }
rect.critical { stroke: #e8a000; stroke-width: 3; }
"""


def _tick_step(span):
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400):
        if span / step <= 12:
            return step
    return 28800


def render_svg(report):
    ran = [p for p in report["packages"] if "start" in p]
    lanes = max([int(report["meta"].get("slots") or 0)] + [p["slot"] + 1 for p in ran] + [1])
    origin = min((p["start"] for p in ran), default=0.0)
    span = max([p["end"] - origin for p in ran] + [1e-3])
    scale = PLOT_WIDTH / span
    height = TOP + lanes * LANE + 10
    critical = set(report.get("critical_path") or [])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + PLOT_WIDTH + 20}" height="{height}" '
           f'role="img" aria-label="build timeline"><style>{SVG_STYLE}</style>']
    step = _tick_step(span)
    for i in range(int(span // step) + 1):
        x = LEFT + i * step * scale
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 5}" x2="{x:.1f}" y2="{height - 10}" stroke="#ddd"/>'
                   f'<text x="{x:.1f}" y="{TOP - 10}" text-anchor="middle">{format_duration(i * step)}</text>')
    for lane in range(lanes):
        out.append(f'<text x="4" y="{TOP + lane * LANE + LANE / 2 + 4}">slot {lane}</text>')
    for p in ran:
        x, w = LEFT + (p["start"] - origin) * scale, max(1.0, p["duration"] * scale)
        y = TOP + p["slot"] * LANE + 2
        classes = f"job {p['state']}" + (" critical" if p["key"] in critical else "")
        title = (f"{p['label']} ({p['state']}, -j{p['jobs']})\n"
                 f"+{format_duration(p['start'] - origin)} to +{format_duration(p['end'] - origin)}: "
                 f"{format_duration(p['duration'])}" + ("\ncritical path" if p["key"] in critical else ""))
        out.append(f'<rect class="{classes}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{LANE - 4}">'
                   f'<title>{html.escape(title)}</title></rect>')
        text = p["label"] + (f" -j{p['jobs']}" if p["jobs"] > 1 else "")
        if w > 7 * len(text):
            out.append(f'<text x="{x + 3:.1f}" y="{y + LANE / 2 + 2}" fill="#fff">{html.escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(report):
    meta, summary = report["meta"], report["summary"]
    e = html.escape
    facts = [f"{_utc(meta.get('started'))} to {_utc(meta.get('finished'))} ({format_duration(summary['elapsed'])})",
             f"{meta.get('slots', '?')} slots",
             f"{summary['done']} built, {summary['failed']} failed, {summary['skipped']} skipped",
             f"critical path {format_duration(summary['critical_path_time'])} of "
             f"{format_duration(summary['build_span'])} building"]
    facts += [f"{name}: {meta[name]}" for name in ("config", "store") if meta.get(name)]
    rows = []
    for p in report["packages"]:
        detail = p.get("error", "").strip().splitlines()[:1] if p["state"] == "failed" else [p.get("reason", "")]
        rows.append(f'<tr class="{e(p["state"])}"><td>{e(p["label"])}</td><td>{e(p["state"])}</td>'
                    f'<td>{format_duration(p["duration"]) if "duration" in p else "-"}</td>'
                    f'<td>{e(str(p.get("log", "")))}</td><td>{e(detail[0] if detail else "")}</td></tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sitedist build report {e(_utc(meta.get('started')))}</title>
<style>{PAGE_STYLE}</style></head>
<body>
<h1>sitedist build report</h1>
<p>{'<br>'.join(e(str(f)) for f in facts)}</p>
<p class="legend"><span style="background:#6a9fd8"></span>built<span style="background:#d9534f"></span>failed
<span style="border:3px solid #e8a000;width:8px;height:8px"></span>critical path (hover a bar for its times)</p>
{render_svg(report)}
<table><tr><th>package</th><th>state</th><th>time</th><th>log</th><th>error or reason</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
