"""Arguments several commands share."""

import os

import click

from sitedist.errors import ConfigError


def config_and_name(func):
    """``CMD [CONFIG] NAME``: the config may be left out when $SITEDIST_CONFIG names it or ./site.yml exists."""
    return click.argument("args", nargs=-1, required=True, metavar="[CONFIG] NAME")(func)


def split_config_and_name(args):
    if len(args) == 2:
        return args[0], args[1]
    if len(args) != 1:
        raise click.UsageError("expected [CONFIG] NAME")
    config = os.environ.get("SITEDIST_CONFIG") or "site.yml"
    if not os.path.isfile(config):
        raise ConfigError(f"no site config given and {config} not found",
                          hint="name it first (sitedist show site.yml NAME) or set SITEDIST_CONFIG")
    return config, args[0]


def load_named(args, kinds=("package", "compiler", "mpi")):
    """(context, nodes named NAME) for ``[CONFIG] NAME``; a ConfigError listing the known names if none."""
    from sitedist.ops import sync as flow

    config, name = split_config_and_name(args)
    ctx = flow.load(config)
    nodes = [n for n in ctx.plan.find(name) if n.kind in kinds]
    if not nodes:
        known = sorted({n.name for n in ctx.plan.nodes if n.kind in kinds})
        raise ConfigError(f"'{name}' is not in the plan of {config}", hint="known: " + ", ".join(known))
    return ctx, nodes
