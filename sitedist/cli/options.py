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
