"""sitedist log [CONFIG] NAME: print the build log of a package (of a failed build, if it failed)."""

import gzip
import os

import click

from sitedist.cli.options import config_and_name, load_named
from sitedist.errors import ConfigError


@click.command()
@config_and_name
@click.option("--path", "path_only", is_flag=True, help="Print where the log is instead of the log.")
def log(args, path_only):
    """Print the build log of NAME: from its artifact when complete, else from a failed build's directory."""
    ctx, nodes = load_named(args, kinds=("package",))
    for n in nodes:
        prefix = ctx.prefixes[n.key]
        done = os.path.join(prefix, ".sitedist", "build.log.gz")
        failed = os.path.join(ctx.store.build_path(n.name, n.version, n.aid), "build.log")
        if os.path.exists(done):
            path, opener = done, gzip.open
        elif os.path.exists(failed):
            path, opener = failed, open
        else:
            raise ConfigError(f"{n.label} ({n.aid}) has no build log: it has not been built "
                              f"({ctx.states[n.key]})")
        if path_only:
            click.echo(path)
            continue
        if len(nodes) > 1:
            click.echo(f"==> {n.label} {n.aid}: {path}")
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                click.echo(line, nl=False)
