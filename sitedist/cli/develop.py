"""sitedist develop CONFIG PROFILE DIR: a writable environment over a profile, with DIR/activate."""

import click

from sitedist.errors import ProfileError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("profile_name", metavar="PROFILE")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--target", default=None, help="The CPU target's profile, when the config has several targets.")
def develop(config, profile_name, directory, target):
    """Make DIR a writable environment over PROFILE's current generation: install your own code into it
    (--prefix=DIR) after 'source DIR/activate'."""
    from sitedist.cli.profile import profile_instances
    from sitedist.core.store import Store
    from sitedist.develop import make_env
    from sitedist.spec.config import load_config

    cfg = load_config(config)
    instances = profile_instances(cfg, profile_name)
    if len(instances) > 1:
        chosen = [i for i in instances if i[1] == target]
        if not chosen:
            raise ProfileError(f"profile {profile_name} has one tree per CPU target "
                               f"({', '.join(i[1] for i in instances)}); say which with --target")
        instances = chosen
    root = instances[0][2]
    click.echo(str(make_env(Store(cfg.store_root, cfg.upstreams, group=cfg.store_group, build_dir=cfg.build_dir), profile_name, root, directory)))
