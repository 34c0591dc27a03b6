"""sitedist modules CONFIG: regenerate the module tree without building; --rollback, --list."""

import os
import time

import click

from sitedist.errors import ModulesError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--rollback", is_flag=True, help="Switch users back to the previous kept generation.")
@click.option("--list", "list_", is_flag=True, help="List the kept generations.")
def modules(config, rollback, list_):
    """Regenerate and publish CONFIG's module tree from what the store holds (no builds), or roll back
    or list its generations. A sync after a rollback publishes the config's tree again."""
    from sitedist.spec.config import load_config

    cfg = load_config(config)
    if cfg.modules is None:
        raise ModulesError(f"{config} has no 'modules:' section; nothing to publish")
    from sitedist import modules as pub

    roots = [cfg.modules["root"]]
    if len(cfg.targets) > 1:
        from sitedist.sync import resolve_targets



        roots = [os.path.join(cfg.modules["root"], t) for t in resolve_targets(cfg).values()]
    if list_:
        for root in roots:
            for g in pub.list_generations(root):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created))
                click.echo(f"{'*' if g.current else ' '} {g.number:>4}  {stamp}  {g.modules:>5} modules  {g.path}")
        return
    if rollback:
        from sitedist.core.locks import StoreLock

        for root in roots:
            lock = StoreLock(os.path.join(root, ".publish.lock"), what="rolling back modules")
            click.echo(f"{root}: now generation {pub.rollback(root, lock=lock)}")
        return
    from sitedist import sync as flow
    from sitedist.publish import publish_modules

    ctx = flow.load(config)
    missing = [n.label for n in ctx.plan.nodes if ctx.states[n.key] not in ("complete", "upstream")]
    if missing:
        raise ModulesError(f"{len(missing)} artifacts of {config} are not built: {', '.join(missing)}; "
                           f"run 'sitedist sync {config}' (modules are published only for a complete plan, so "
                           f"that no module loads a dependency that does not exist)")
    for result in publish_modules(ctx):
        state = f"generation {result.generation}" + ("" if result.changed else " (unchanged)")
        click.echo(f"{result.root}: {state}, {result.modules} modules")
