"""sitedist history CONFIG: the syncs of CONFIG recorded in its store."""

import json
import time

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def history(config, as_json):
    """List the recorded syncs of CONFIG, oldest first: number, time, user, git commit of the config
    (with '+dirty' when its work tree had changes) and number of artifacts. Go back to one with
    'sitedist sync CONFIG --from-history N'; compare with 'sitedist diff CONFIG@N CONFIG'."""
    from sitedist.core.history import records
    from sitedist.ops.locking import _store_of

    metas = records(_store_of(config), config)
    if as_json:
        click.echo(json.dumps(metas, indent=1))
        return
    if not metas:
        click.echo(f"no recorded syncs of {config}")
        return
    for m in metas:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["time"]))
        git = m.get("git")
        rev = (git["commit"][:12] + ("+dirty" if git.get("dirty") else "")) if git else "-"
        click.echo(f"{m['n']:>4}  {stamp}  {m.get('user', '?'):<10} {rev:<18} {m.get('artifacts', 0):>5} artifacts")
