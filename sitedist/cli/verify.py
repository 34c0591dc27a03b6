"""sitedist verify CONFIG: check the artifacts of CONFIG's store against their manifests; --repair."""

import json
import sys

import click

from sitedist.errors import StoreError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--repair", is_flag=True,
              help="Rebuild broken artifacts of CONFIG's plan; remove what interrupted builds and killed "
                   "processes left.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings (and repairs) as JSON.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="Artifacts checked at once, and CPU slots for rebuilds (default: the CPUs).")
def verify(config, repair, as_json, jobs):
    """Check every artifact of CONFIG's store (not its upstreams) against its manifest: files changed,
    added or removed since the build, incomplete prefixes, leftovers of killed processes. Exit status
    1 while anything is wrong."""
    from sitedist.ops import sync as flow
    from sitedist.ops.verify import report_lines, verify_store

    ctx = flow.load(config) if repair else None
    store = ctx.store if ctx else _store(config, flow.cache_dir())
    report = verify_store(store, jobs)
    out = {"report": report.to_json()}
    if not as_json:
        for line in report_lines(report):
            click.echo(line)
    final = report
    if repair and report.findings:
        result = _repair(ctx, report, jobs, as_json)
        final = verify_store(store, jobs)
        out["repair"] = {"done": result.done, "left": result.left,
                         "built": result.sync.built if result.sync else [],
                         "failed": {k: str(v) for k, v in result.sync.failed.items()} if result.sync else {}}
        out["after"] = final.to_json()
        if not as_json:
            click.echo("repair:")
            for line in result.done:
                click.echo(f"  done: {line}")
            for line in result.left:
                click.echo(f"  left: {line}")
            click.echo("after repair:")
            for line in report_lines(final):
                click.echo(f"  {line}")
    if as_json:
        click.echo(json.dumps(out, indent=1))
    if not final.ok:
        kinds = sorted({f.kind for f in final.errors})
        raise StoreError(f"{len(final.errors)} problem(s) in the store {store.root}: {', '.join(kinds)}"
                         + ("" if repair else f"\n  hint: sitedist verify {config} --repair"))


def _store(config_path, cache_dir):
    """The store of a config, without probing the host or resolving the plan."""
    from sitedist.core.store import Store
    from sitedist.spec.config import load_config
    from sitedist.spec.doc_cache import DocCache

    config = load_config(config_path, DocCache.for_config(config_path, cache_dir))
    return Store(config.store_root, group=config.store_group, build_dir=config.build_dir)


def _repair(ctx, report, jobs, as_json):
    from sitedist.build.progress import Progress
    from sitedist.core.locks import describe_holder
    from sitedist.ops import sync as flow
    from sitedist.ops.verify import repair

    meters = []

    def rebuild(ctx):
        """The broken artifacts were moved away: build them again through the normal sync flow."""
        flow.refresh_states(ctx)
        meters.append(Progress(total=len(ctx.to_build()), stream=sys.stderr, mode="quiet" if as_json else "auto"))
        return flow.finish_sync(ctx, jobs, events=meters[-1],
                                on_wait=lambda info: click.echo(f"waiting for a lock: {describe_holder(info)}",
                                                                err=True))

    try:
        return repair(ctx, report, rebuild)
    finally:
        for meter in meters:
            meter.close()
