"""sitedist cache keygen|push: binary caches (admin_docs/caches.md)."""

import click


@click.group()
def cache():
    """Binary caches: signing keys, pushing artifacts."""


@cache.command()
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
def keygen(name, directory):
    """Make an Ed25519 key pair DIRECTORY/NAME.key (secret, mode 0600) and DIRECTORY/NAME.pub."""
    from sitedist.cache.keys import keygen as make

    pub, key = make(name, directory)
    click.echo(f"secret key: {key} (keep it private; 'sitedist cache push --key {key}')")
    click.echo(f"public key: {pub} (list it under 'caches: - trusted_keys:' of the configs that trust it)")


@cache.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("dest", type=click.Path(file_okay=False))
@click.argument("names", nargs=-1)
@click.option("--key", "key_file", type=click.Path(dir_okay=False), default=None,
              help="Sign the manifests with this secret key (from 'sitedist cache keygen').")
def push(config, dest, names, key_file):
    """Push CONFIG's complete artifacts (all, or NAMES and their dependencies) into the directory cache DEST."""
    from sitedist.ops import sync as flow
    from sitedist.cache.keys import load_secret
    from sitedist.cache.push import push as do_push
    from sitedist.errors import CacheError

    secret = load_secret(key_file) if key_file else None
    ctx = flow.load(config)
    nodes = [n for n in ctx.plan.nodes if n.kind == "package"]
    if names:
        unknown = sorted(set(names) - {n.name for n in nodes})
        if unknown:
            raise CacheError(f"{', '.join(unknown)}: not a package of {config}; nothing was pushed")
        chosen, stack = [], [n for n in nodes if n.name in names]
        while stack:
            n = stack.pop()
            if n not in chosen and n.kind == "package":
                chosen.append(n)
                stack += n.all_deps()
        nodes = [n for n in nodes if n in chosen]
    missing = [n.label for n in nodes if ctx.states[n.key] not in ("complete", "upstream")]
    if missing:
        raise CacheError(f"not built yet: {', '.join(missing)}; run 'sitedist sync {config}' first (nothing was pushed)")
    if not secret:
        click.echo("warning: no --key: the entries are unsigned; only configs that mark this cache "
                   "'signed: false' will use them", err=True)
    done = do_push(dest, [ctx.prefixes[n.key] for n in nodes], secret)
    by_id = {n.aid: n.label for n in nodes}
    for aid, what in done.items():
        click.echo(f"  [{what}] {by_id.get(aid, aid)} {aid}")
    pushed = sum(1 for v in done.values() if v == "pushed")
    click.echo(f"{pushed} pushed, {len(done) - pushed} already in {dest}")
