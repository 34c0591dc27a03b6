"""sitedist report CONFIG: the report of the last sync that built something in CONFIG's store."""

import json
import os

import click

from sitedist.errors import StoreError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (timestamps, slots, states, logs).")
@click.option("--html", "as_html", is_flag=True, help="Print the path of the HTML page with the build timeline.")
def report(config, as_json, as_html):
    """Show the last build report: per package its state, time and log, the failures and the critical path."""
    from sitedist.build.report import format_report, load_report
    from sitedist.core.store import Store
    from sitedist.spec.config import load_config

    store = Store(load_config(config).store_root)
    latest = os.path.join(store.reports_dir, "latest.json")
    if not os.path.exists(latest):
        raise StoreError(f"no build report yet in the store {store.root}: 'sitedist sync {config}' writes one "
                         f"each time it builds something")
    data = load_report(store.reports_dir)
    if as_html:
        page = os.path.join(store.reports_dir, "latest.html")
        if not os.path.exists(page):
            raise StoreError(f"the build report has no HTML page: {page} is missing; the next 'sitedist sync' "
                             f"that builds something writes it again")
        click.echo(page)
    elif as_json:
        click.echo(json.dumps(data, indent=1))
    else:
        click.echo(format_report(data))
