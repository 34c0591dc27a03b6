"""sitedist lock CONFIG: write what CONFIG resolves to on this host into a lock file."""

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the lock (default: CONFIG.lock beside the config).")
@click.option("--reprobe", is_flag=True, help="Probe the host again instead of using the cached probe.")
def lock(config, output, reprobe):
    """Write CONFIG.lock: every artifact's name, version, id and hashed document, the recipes' and
    sources' checksums, the host's compilers, MPIs and CPU targets, and sitedist's protocol numbers.
    Nothing is built; the same inputs give the same bytes."""
    import os

    from sitedist.ops import noop
    from sitedist.spec.lock import default_path

    path = os.path.abspath(output) if output else default_path(config)
    count = noop.lock_unchanged(config, path, refresh_probe=reprobe)
    if count is not None:   # the lock of the cached plan, byte for byte: nothing to build or write
        click.echo(f"{path}: {count} artifacts (unchanged)")
        return
    from sitedist.ops import sync as flow
    from sitedist.ops.locking import CurrentLock

    ctx = flow.load(config, refresh_probe=reprobe)
    current = CurrentLock(ctx, path)
    written = current.write(path)
    click.echo(f"{path}: {current.artifacts} artifacts" + ("" if written else " (unchanged)"))
