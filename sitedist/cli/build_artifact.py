"""sitedist build-artifact (hidden): the build of one artifact, as a Slurm job of a sync runs it."""

import sys

import click


@click.command(name="build-artifact", hidden=True)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--key", required=True, help="The artifact, as name/version-id.")
@click.option("--prefix", required=True, help="Its prefix in the store (complete already: exit at once).")
@click.option("--jobs", type=click.IntRange(1), default=1, help="CPUs of the build (its make -j).")
@click.option("--probe", "probe_path", required=True, type=click.Path(dir_okay=False),
              help="The submitting sync's probe report (JSON), so the plan resolves as it did there.")
@click.option("--result", "result_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the outcome (JSON) for the submitting sync.")
@click.option("--cache-mode", type=click.Choice(["use", "off", "only"]), default="use",
              help="Binary caches as the submitting sync uses them: use, off (--no-cache), only (--cache-only).")
def build_artifact(config, key, prefix, jobs, probe_path, result_path, cache_mode):
    """Build one artifact of CONFIG under its lock (what a Slurm job of 'sync --executor slurm' runs)."""
    from sitedist.ops.slurm_job import build_one

    sys.exit(build_one(config, key, prefix, jobs, probe_path, result_path, cache_mode))
