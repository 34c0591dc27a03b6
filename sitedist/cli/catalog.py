"""sitedist catalog CONFIG [--output DIR]: where the published software catalog is, or a copy of it."""

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Copy catalog.json and index.html of the current module tree into DIR (a web server's "
                   "directory); one subdirectory per CPU target when there are several.")
def catalog(config, output):
    """Show where CONFIG's software catalog is published (<modules.root>/catalog, which switches and rolls
    back with the module tree), or copy the current one into DIR. The catalog is written by every publish
    ('sitedist sync' or 'sitedist modules')."""
    from sitedist.ops import sync as flow
    from sitedist.errors import ModulesError
    from sitedist.modules.catalog import copy_published
    from sitedist.ops.publish import module_configs

    ctx = flow.load(config)
    if ctx.config.modules is None:
        raise ModulesError(f"{config} has no 'modules:' section; there is no module tree to describe")
    configs = module_configs(ctx)
    for target, cfg in configs:
        dest = None
        if output:
            dest = output if len(configs) == 1 else f"{output}/{target}"
        source, data = copy_published(cfg["root"], dest)
        where = dest or source
        click.echo(f"{where}/index.html: generation {data.get('generation')}, {len(data['packages'])} packages"
                   + (f" (target {target})" if target else ""))
