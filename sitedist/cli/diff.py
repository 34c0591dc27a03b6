"""sitedist diff A B: which packages differ between two configs, lock files or recorded syncs, and why."""

import json
import sys

import click


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--brief", is_flag=True, help="One line per package, without the reasons.")
def diff(a, b, as_json, brief):
    """Compare A and B, each a site config (resolved now), a lock file or CONFIG@N (sync N of
    'sitedist history CONFIG'): packages added, removed, and for each changed id the inputs that differ
    (source, script lines, options, dependencies one level down, toolchain, target). Exit status 0 when
    they are the same, 1 when they differ."""
    from sitedist.ops.locking import resolve_side
    from sitedist.spec import lock as locks

    old, old_name = resolve_side(a)
    new, new_name = resolve_side(b)
    changes = locks.compare(old, new)
    if as_json:
        click.echo(json.dumps([{"status": c.status, "package": c.label,
                                "old": c.old["id"] if c.old else None, "new": c.new["id"] if c.new else None,
                                "reasons": c.reasons} for c in changes], indent=1))
    else:
        click.echo(f"--- {old_name}\n+++ {new_name}")
        for line in locks.lines(changes, details=not brief):
            click.echo(line)
        counts = {s: sum(c.status == s for c in changes) for s in ("added", "removed", "changed")}
        click.echo(", ".join(f"{n} {s}" for s, n in counts.items()) if changes else "no differences")
    sys.exit(1 if changes else 0)
