"""sitedist gc CONFIG [--dry-run] [--keep N] [--older-than DAYS]: remove what no root refers to."""

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--keep-syncs", type=click.IntRange(0), default=None,
              help="Keep the artifacts of the newest N recorded syncs of each config (default: the config's "
                   "'history: keep', else 0: only module trees, profiles and roots keep artifacts).")
@click.option("--keep", type=click.IntRange(1), default=None,
              help="First prune profile generations beyond the newest N (the current one is always kept).")
@click.option("--older-than", "older_than", type=click.FloatRange(0), default=None, metavar="DAYS",
              help="First prune profile generations older than DAYS (with --keep: both must hold).")
@click.option("-v", "--verbose", is_flag=True, help="List the roots counted.")
@click.option("--add-root", metavar="NAME", default=None,
              help="Instead of collecting: keep the artifacts PREFIX... (and their dependencies) as root NAME.")
@click.option("--remove-root", metavar="NAME", default=None, help="Instead of collecting: drop root NAME.")
@click.argument("prefixes", nargs=-1, metavar="[PREFIX]...")
def gc(config, dry_run, keep_syncs, keep, older_than, verbose, add_root, remove_root, prefixes):
    """Remove the artifacts of CONFIG's store that no module tree, profile, develop environment, registered
    root or running sync refers to (directly or as a dependency). Upstream stores are never touched."""
    from sitedist.ops import gc as collector
    from sitedist.core.store import Store
    from sitedist.spec.config import load_config

    if prefixes and not add_root:
        raise click.UsageError("PREFIX arguments go with --add-root NAME")
    if add_root or remove_root:
        cfg = load_config(config)
        store = Store(cfg.store_root, cfg.upstreams, group=cfg.store_group, build_dir=cfg.build_dir)
        if add_root:
            collector.add_root(store, add_root, prefixes)
            click.echo(f"root {add_root}: {len(prefixes)} artifacts kept in {store.root}")
        if remove_root:
            collector.remove_root(store, remove_root)
            click.echo(f"root {remove_root} removed from {store.root}")
        return

    def on_wait(info):
        from sitedist.core.locks import describe_holder

        click.echo(f"waiting for the GC lock: {describe_holder(info)}", err=True)

    result = collector.collect(load_config(config), dry_run=dry_run, keep=keep, older_than_days=older_than,
                               on_wait=on_wait, keep_syncs=keep_syncs)
    verb = "would remove" if dry_run else "removed"
    if verbose:
        for what, count in result.roots:
            click.echo(f"root: {what} ({count} prefixes)")
    for path, numbers in result.pruned:
        click.echo(f"{'would prune' if dry_run else 'pruned'} profile generations {', '.join(map(str, numbers))} "
                   f"of {path}")
    for what in result.stale:
        click.echo(f"{'would forget' if dry_run else 'forgot'} {what}: it no longer exists")
    for prefix in result.building:
        click.echo(f"kept {prefix}: its build is running")
    for prefix, size, complete in result.removed:
        click.echo(f"{verb} {prefix} ({collector.format_bytes(size)}{'' if complete else ', incomplete'})")
    for prefix, reason in result.failed:
        click.echo(f"could not remove {prefix}: {reason}", err=True)
    click.echo(f"{result.store}: {verb} {len(result.removed)} artifacts, "
               f"{'would free' if dry_run else 'freed'} {collector.format_bytes(result.freed)} ({result.freed} bytes); "
               f"{result.kept} kept, {len(result.roots)} roots" + ("; dry run: nothing was removed" if dry_run else ""))
    if result.failed:
        from sitedist.errors import StoreError

        raise StoreError(f"{len(result.failed)} could not be removed (see above)")
