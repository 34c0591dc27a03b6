"""sitedist show [CONFIG] NAME: a package's resolved spec, hash, prefix, dependencies and state."""

import json

import click

from sitedist.cli.options import config_and_name, load_named


@click.command()
@config_and_name
@click.option("--json", "as_json", is_flag=True, help="Print the hashed document and facts as JSON.")
def show(args, as_json):
    """Show every build of NAME in CONFIG's plan."""
    ctx, nodes = load_named(args)
    out = []
    for n in nodes:
        out.append({
            "name": n.name, "version": n.version, "id": n.aid, "kind": n.kind,
            "state": ctx.states[n.key], "prefix": ctx.prefixes[n.key],
            "toolchain": n.toolchain.name if n.toolchain else None, "target": n.target,
            "recipe": n.recipe.path if n.recipe else None, "options": n.options,
            "depends": {k: [f"{d.name}/{d.version}-{d.aid}" for d in v] for k, v in n.deps.items() if v},
            "explicit": n.explicit, "doc": n.doc,
        })
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    for item in out:
        click.echo(f"{item['name']} {item['version']}  id {item['id']}  [{item['state']}]")
        click.echo(f"  prefix:    {item['prefix']}")
        click.echo(f"  kind:      {item['kind']}" + (f"  toolchain: {item['toolchain']}" if item["toolchain"] else ""))
        if item["recipe"]:
            click.echo(f"  recipe:    {item['recipe']}")
        if item["options"]:
            click.echo("  options:   " + ", ".join(f"{k}={v}" for k, v in item["options"].items()))
        for kind, deps in item["depends"].items():
            click.echo(f"  {kind + ':':<10} " + ", ".join(deps))
        if item["target"]:
            click.echo(f"  target:    {item['target']}")
        click.echo("  hashed document:")
        for line in json.dumps(item["doc"], indent=2, sort_keys=True).splitlines():
            click.echo("    " + line)
