"""sitedist show [CONFIG] NAME: a package's resolved spec, hash, prefix, dependencies and state."""

import json

import click

from sitedist.cli.options import config_and_name, load_named


@click.command()
@config_and_name
@click.option("--json", "as_json", is_flag=True, help="Print the hashed document and facts as JSON.")
@click.option("--why", is_flag=True, help="Explain why each id differs from the one the last recorded sync published.")
def show(args, as_json, why):
    """Show every build of NAME in CONFIG's plan."""
    ctx, nodes = load_named(args)
    if why:
        for line in why_lines(ctx, nodes):
            click.echo(line)
        return
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


def why_lines(ctx, nodes):
    """For each node: unchanged since, new since, or the inputs that changed since the last recorded sync."""
    from sitedist.ops.locking import last_published, lock_of
    from sitedist.spec import lock as locks
    from sitedist.spec.resolve import why

    meta, old = last_published(ctx)
    if old is None:
        return [f"{n.label}: {n.aid}: no recorded sync of {ctx.config.path}; against the store: {why(ctx.store, n)}"
                for n in nodes]
    new = lock_of(ctx)
    since = f"sync {meta['n']}"
    out = []
    for n in nodes:
        entry = new["artifacts"][n.key]
        same = [e for e in old["artifacts"].values() if locks.slot(e) == locks.slot(entry)]
        if any(e["id"] == n.aid for e in same):
            out.append(f"{n.label}: {n.aid}: unchanged since {since}")
        elif not same:
            out.append(f"{n.label}: {n.aid}: new since {since}")
        else:
            out.append(f"{n.label}: {same[0]['id']} in {since} -> {n.aid} now, because:")
            out += [f"    {r}" for r in locks.explain(same[0], entry, old, new)]
    return out
