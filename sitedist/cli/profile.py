"""sitedist profile CONFIG list|rollback|switch N [--profile NAME]: a profile's generations."""

import time

import click

from sitedist.errors import ProfileError


def profile_instances(cfg, name=None, one=False):
    """[(profile name, target, root)] of CONFIG's profiles (only ``name`` if given). ``one``: the action
    changes a profile, so it must be named when the config has several."""
    from sitedist.profiles import profile_roots

    if not cfg.profiles:
        raise ProfileError(f"{cfg.path} has no 'profiles:' section")
    if name is not None and name not in cfg.profiles:
        raise ProfileError(f"{cfg.path} has no profile '{name}'; it has: {', '.join(sorted(cfg.profiles))}")
    if name is None and one and len(cfg.profiles) > 1:
        raise ProfileError(f"{cfg.path} has {len(cfg.profiles)} profiles ({', '.join(sorted(cfg.profiles))}); "
                           "say which with --profile NAME")
    targets = cfg.targets
    if len(targets) > 1:
        from sitedist.host.target import resolve_targets

        targets = list(resolve_targets(cfg).values())
    return [(spec.name, target if len(targets) > 1 else None, root)
            for spec in cfg.profiles.values() if name in (None, spec.name)
            for root, target in profile_roots(spec, targets)]


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("action", type=click.Choice(["list", "rollback", "switch"]))
@click.argument("number", type=int, required=False)
@click.option("--profile", "name", default=None, help="The profile (needed when the config has several).")
def profile(config, action, number, name):
    """List a profile's generations, roll back to the previous one, or switch to generation NUMBER.
    A sync after a rollback publishes the config's profile again, as a new generation."""
    from sitedist import profiles
    from sitedist.spec.config import load_config

    cfg = load_config(config)
    if (action == "switch") != (number is not None):
        raise click.UsageError("'switch' takes a generation NUMBER; 'list' and 'rollback' take none")
    for pname, target, root in profile_instances(cfg, name, one=action != "list"):
        title = pname + (f" [{target}]" if target else "")
        if action == "list":
            gens = profiles.list_generations(root)
            click.echo(f"profile {title}: {root}" + ("" if gens else " (not published yet)"))
            for g in gens:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created))
                click.echo(f"{'*' if g.current else ' '} {g.number:>4}  {stamp}  {len(g.prefixes):>4} artifacts  "
                           + ", ".join(g.packages))
        elif action == "rollback":
            click.echo(f"profile {title}: now generation {profiles.rollback(root)} ({root})")
        else:
            click.echo(f"profile {title}: now generation {profiles.switch_generation(root, number)} ({root})")
