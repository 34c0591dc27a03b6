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
    from sitedist import modules as pub
    from sitedist.ops import sync as flow
    from sitedist.ops.publish import module_configs

    ctx = flow.load(config)
    if ctx.config.modules is None:
        raise ModulesError(f"{config} has no 'modules:' section; nothing to publish")
    roots = [c["root"] for _, c in module_configs(ctx)]
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
    from sitedist.ops.publish import publish_modules

    missing = [n.label for n in ctx.plan.nodes if ctx.states[n.key] not in ("complete", "upstream")]
    if missing:
        raise ModulesError(f"{len(missing)} artifacts of {config} are not built: {', '.join(missing)}; "
                           f"run 'sitedist sync {config}' (modules are published only for a complete plan, so "
                           f"that no module loads a dependency that does not exist)")
    from sitedist.core.gcroots import InUse

    with InUse(ctx.store, ctx.prefixes.values(), what=f"modules {config}"):  # a GC keeps what the tree uses
        results = publish_modules(ctx)
    for result in results:
        state = f"generation {result.generation}" + ("" if result.changed else " (unchanged)")
        click.echo(f"{result.root}: {state}, {result.modules} modules")
