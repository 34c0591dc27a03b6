"""sitedist sync CONFIG: build what the config selects and publish its modules and profiles."""

import json
import sys

import click

from sitedist.errors import BuildError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan (what exists, what would be built and why); write nothing.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="CPU slots shared by concurrent builds and their make -j (default: config 'jobs', else all CPUs).")
@click.option("-k", "--keep-going", is_flag=True, help="After a failed build, go on with everything not depending on it.")
@click.option("--progress", type=click.Choice(["auto", "live", "plain", "json", "quiet"]), default="auto",
              help="Live view on a terminal, timestamped lines otherwise (auto), or JSON events.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (--dry-run) or the summary as JSON.")
@click.option("--reprobe", is_flag=True, help="Probe the host again instead of using the cached probe.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Build here (local) or one Slurm job per artifact (slurm); default: the config's 'executor'.")
@click.option("--locked", "locked", is_flag=False, flag_value="", default=None, metavar="[LOCKFILE]",
              help="Refuse to build or publish unless every id equals the lock's (default CONFIG.lock); "
                   "give it after CONFIG.")
@click.option("--from-history", "from_history", default=None, metavar="N|LOCKFILE",
              help="Publish the module tree and profiles of recorded sync N (see 'sitedist history') or of "
                   "a lock file again, without building.")
@click.option("--no-cache", "no_cache", is_flag=True, help="Build everything; do not look in the config's binary caches.")
@click.option("--cache-only", "cache_only", is_flag=True,
              help="Install what is missing from the binary caches only; fail instead of building a package.")
def sync(config, dry_run, jobs, keep_going, progress, as_json, reprobe, executor, locked, from_history, no_cache,
         cache_only):
    """Build every missing artifact CONFIG selects, then publish modules and profiles atomically."""
    import os

    from sitedist.spec.lock import default_path

    if no_cache and cache_only:
        raise click.UsageError("--no-cache and --cache-only exclude each other")
    lock_file = os.path.abspath(locked) if locked else default_path(config)
    if from_history is None and not (dry_run or reprobe or as_json or progress == "json"):
        from sitedist.ops import noop

        quick = noop.unchanged(config, lock_file, locked=locked is not None)
        if quick is not None:   # nothing changed since the last sync: nothing to build, publish or record
            for line in quick[0]:
                click.echo(line, err=True)
            for line in quick[1]:
                click.echo(line)
            return
    from sitedist.ops import locking, noop
    from sitedist.ops import sync as flow

    if from_history is not None:
        for line in locking.restore(config, from_history):
            click.echo(line)
        return
    cache_mode = "off" if no_cache else "only" if cache_only else "use"

    def on_note(text):
        click.echo(f"note: {text}", err=True)

    if dry_run:
        ctx = flow.load(config, refresh_probe=reprobe)
        flow.use_caches(ctx, cache_mode, on_note=on_note)
        if locked is not None:
            locking.check_locked(ctx, lock_file)
        if as_json:
            click.echo(json.dumps(plan_json(ctx), indent=1))
        else:   # one write: ten thousand lines cost 0.3 s through click.echo one by one
            click.echo("\n".join(flow.describe_plan(ctx) + ["dry run: nothing was written"]))
        return

    ctx = flow.load(config, refresh_probe=reprobe)
    flow.use_caches(ctx, cache_mode, on_note=on_note)
    if locked is not None:
        current = locking.check_locked(ctx, lock_file)
    else:
        current = locking.CurrentLock(ctx, lock_file)
        drift = locking.drift_from_existing(ctx, lock_file, current)
        if drift:
            click.echo(f"warning: {config} now resolves differently from {lock_file} "
                       f"({len(drift)} artifacts); the lock is rewritten after a successful sync:", err=True)
            for change in drift:
                click.echo(f"  {change.summary()}", err=True)
    from sitedist.build.progress import Progress

    todo = ctx.to_build()
    if not as_json and progress != "json":
        click.echo("\n".join(flow.describe_plan(ctx) if todo else flow.describe_plan(ctx)[-1:]), err=True)
    meter = Progress(total=len(todo), stream=sys.stderr, mode="quiet" if as_json else progress) if todo else None

    def on_wait(info):
        from sitedist.core.locks import describe_holder

        click.echo(f"waiting for a lock: {describe_holder(info)}", err=True)

    result = flow.finish_sync(ctx, jobs=jobs, keep_going=keep_going, events=meter, on_wait=on_wait,
                              executor=executor)
    if meter:
        meter.close()
    if as_json:
        click.echo(json.dumps(summary_json(result), indent=1))
    else:
        for line in summary_lines(result):
            click.echo(line)
    if result.ok:
        meta, rewritten = locking.after_success(ctx, lock_file, current, rewrite=locked is None)
        noop.remember(ctx, result.published, lock_file, current, meta)
        if rewritten and not as_json:
            click.echo(f"lock: {lock_file} rewritten")
        if not as_json and meta.get("new"):
            click.echo(f"history: recorded as sync {meta['n']} of {config} (see sitedist history)")
    if not result.ok:
        first = next(iter(result.failed.values()), None)
        raise BuildError(str(first) if first else "some builds failed")


def plan_json(ctx):
    from sitedist.ops import sync as flow
    from sitedist.spec.resolve import why

    return {"config": ctx.config.path, "store": ctx.store.root, "artifacts": [
        {"name": n.name, "version": n.version, "id": n.aid, "kind": n.kind, "state": ctx.states[n.key],
         "prefix": ctx.prefixes[n.key], "toolchain": n.toolchain.name if n.toolchain else None,
         "reason": why(ctx.store, n) if ctx.states[n.key] == "missing" else None,
         "cache": flow.cache_for(ctx, n) if ctx.states[n.key] in ("missing", "incomplete") else None}
        for n in ctx.plan.nodes]}


def summary_json(result):
    return {"ok": result.ok, "built": result.built, "fetched": result.fetched, "failed": {k: str(v) for k, v in result.failed.items()},
            "skipped": result.skipped, "report": result.report,
            "modules": [getattr(p, "__dict__", str(p)) for p in (result.published or {}).get("modules", [])]
            if result.published else None}


def summary_lines(result):
    lines = []
    if result.fetched:
        lines.append(f"fetched {len(result.fetched)} from caches: " + ", ".join(result.fetched))
    if result.built:
        lines.append(f"built {len(result.built)}: " + ", ".join(result.built))
    for key, exc in result.failed.items():
        lines.append(f"FAILED {key}: {str(exc).splitlines()[0]}")
        if getattr(exc, "log_path", None):
            lines.append(f"  log: {exc.log_path}")
    for key, cause in result.skipped.items():
        lines.append(f"skipped {key}: {result.reasons.get(key) or f'depends on failed {cause}'}")
    if result.report:
        lines.append(f"report: {result.report.get('html')}")
    for pub in (result.published or {}).get("modules", []):
        if pub.changed:
            lines.append(f"modules: generation {pub.generation} published in {pub.root} ({pub.modules} modules, "
                         f"{pub.rendered} files written, {pub.reused} reused)")
        else:
            lines.append(f"modules: unchanged (generation {pub.generation} in {pub.root})")
        lines += [f"  note: {note}" for note in pub.notes]
        lines += [f"  to use them: module use {path}" for path in pub.modulepath.values()][:1]
    for pub in (result.published or {}).get("profiles", []):
        lines.append(f"profile: {pub}")
    if result.ok and not result.built and not result.fetched:
        lines.append("nothing to build")
    return lines
