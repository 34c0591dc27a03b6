"""The ``sitedist`` command. Each subcommand lives in its own module under sitedist/cli and is
imported only when run, so that ``sitedist --help`` and a no-op sync start fast."""

import importlib
import signal
import sys

from sitedist import unsupported_python

if unsupported_python():  # before importing what needs a newer Python: one clear message, no traceback
    sys.exit(unsupported_python())

import click  # noqa: E402

from sitedist import __version__  # noqa: E402
from sitedist.errors import SitedistError  # noqa: E402

# command name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS = {
    "sync": ("sitedist.cli.sync", "sync", "Build what a site config selects and publish its modules."),
    "show": ("sitedist.cli.show", "show", "Show a package's resolved spec, hash, prefix and state."),
    "log": ("sitedist.cli.log", "log", "Print the build log of a package."),
    "probe": ("sitedist.cli.probe", "probe", "Find host compilers, MPI and the CPU target."),
    "modules": ("sitedist.cli.modules", "modules", "Regenerate or roll back the module tree."),
    "catalog": ("sitedist.cli.catalog", "catalog", "Show or copy the software catalog page of the module tree."),
    "profile": ("sitedist.cli.profile", "profile", "List, roll back or switch profile generations."),
    "develop": ("sitedist.cli.develop", "develop", "Make a writable environment from a profile."),
    "gc": ("sitedist.cli.gc", "gc", "Remove artifacts no root refers to."),
    "verify": ("sitedist.cli.verify", "verify", "Check artifacts against their manifests."),
    "report": ("sitedist.cli.report", "report", "Show the report of the last sync."),
    "build-artifact": ("sitedist.cli.build_artifact", "build_artifact", None),  # hidden: a Slurm job runs it
    "lock": ("sitedist.cli.lock", "lock", "Write a lock file: every id of the plan and its inputs."),
    "diff": ("sitedist.cli.diff", "diff", "Which packages differ between two configs, locks or syncs, and why."),
    "cache": ("sitedist.cli.cache", "cache", "Make signing keys for binary caches and push artifacts into one."),
    "history": ("sitedist.cli.history", "history", "List the recorded syncs of a config."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(name for name in COMMANDS if COMMANDS[name][2])

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS) if COMMANDS[name][2]]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sitedist")
def cli():
    """sitedist: build a site's software into a hash-addressed store and publish its modules."""


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    import logging

    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # e.g. a lock taken over
    # SIGTERM (kill, a cron job's timeout) and SIGHUP (a closed terminal) unwind like Ctrl-C: running builds
    # are cancelled and their process groups killed, their prefixes and locks removed. Without this the
    # interpreter died at once and the builds (each in a session of its own) ran on, orphaned.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    try:
        cli.main(args=argv, prog_name="sitedist", standalone_mode=False)
    except SitedistError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
