"""Builds through a real Slurm (executor slurm): the cluster .ci/slurm-up.sh starts (one node, this host).

Without a Slurm controller answering `sinfo` these tests skip, saying so; under CI=true they fail
instead, so that CI cannot skip them silently. Recipes are small synthetic ones (local source
directories, a few shell commands) except in the example-stack test, whose builds are real.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, site_config, write


# How long a test waits for a job to start or a sync to end: the one node may be busy with the jobs of
# another test (pytest -n 2), e.g. the example stack's real builds, for minutes.
BUSY_NODE = 1200


def _slurm_answers():
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def slurm(tmp_path):
    """A running Slurm; at the end, scancel whatever job of this test is left (none should be)."""
    if not _slurm_answers():
        reason = "no Slurm controller answers 'sinfo' (start one with: bash .ci/slurm-up.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    yield
    left = our_jobs(tmp_path)
    if left:
        subprocess.run(["scancel", *left])
        pytest.fail(f"jobs of this test left in squeue: {left}")


def our_jobs(tmp_path):
    """Ids of the jobs in squeue (pending, running, completing) submitted from under ``tmp_path``."""
    return list(our_states(tmp_path))


def our_states(tmp_path):
    """id -> (state, job name) of the jobs in squeue submitted from under ``tmp_path``."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j|%Z"], capture_output=True, text=True).stdout
    rows = [line.split("|") for line in out.splitlines()]
    return {r[0]: (r[1], r[2]) for r in rows if len(r) == 4 and r[3].startswith(str(tmp_path))}


def job_state(job_id):
    """(JobState, Reason) from scontrol (finished jobs stay known for MinJobAge, 300 s in slurm-up.sh)."""
    out = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True, text=True).stdout
    state = re.search(r"JobState=(\S+)", out)
    reason = re.search(r"Reason=(\S+)", out)
    return (state.group(1) if state else None, reason.group(1) if reason else None)


def settled_state(job_id, timeout=60):
    """The job's state once Slurm has finished with it: a loaded node keeps a failed or cancelled job
    COMPLETING (its epilog, the step's cleanup) for a while after the sync has seen it end."""
    return wait_for(lambda: (job_state(job_id)[0] or "").replace("COMPLETING", "") or None, timeout,
                    f"Slurm job {job_id} to finish completing")


def queued(text):
    """name -> Slurm job id, from the 'queued NAME VERSION as Slurm job N' lines of plain progress."""
    return {m.group(1): m.group(2) for m in re.finditer(r"queued (\S+) \S+ as Slurm job (\d+)", text)}


def recipe(recipes, name, commands, deps=()):
    write(recipes / "src" / "README", "a local source directory\n")
    body = [f"name: {name}", "versions:", '  "1.0": {path: src}']
    if deps:
        body += ["depends:", f"  link: [{', '.join(deps)}]"]
    body += ["build: commands", "commands:"] + [f"  - {json.dumps(c)}" for c in commands]
    write(recipes / f"{name}.yml", "\n".join(body) + "\n")


def install(name):
    return f'mkdir -p "$PREFIX/bin" && printf "#!/bin/sh\\necho {name}\\n" > "$PREFIX/bin/{name}" && chmod +x "$PREFIX/bin/{name}"'


def slurm_config(tmp_path, packages, recipes, extra="", name="site.yml", store=None):
    extra = "executor: {type: slurm, poll: 0.3}\n" + extra
    return site_config(tmp_path, {p: None for p in packages}, recipes=[recipes], extra=extra, name=name,
                       store=store or tmp_path / "store")


def _default_sigint():
    # A suite started in the background of a shell script (nohup, `cmd &`) inherits SIGINT ignored, and
    # Python keeps it ignored: the sync would never see the Ctrl-C that the interrupt test sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_sync(*args):
    return subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", "--progress", "plain", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            preexec_fn=_default_sigint)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def artifacts(config):
    return {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}


def test_example_stack_through_slurm(tmp_path, slurm, sources):
    """Every artifact of the example stack is built by exactly one Slurm job, whose id is in the report
    and in the artifact's build record; the submitting sync publishes the modules; a second sync
    submits nothing."""
    example = os.path.join(REPO, "site_configs", "example", "site.yml")
    config = write(tmp_path / "site.yml", f"""
        extends: [{example}]
        store: {tmp_path / 'store'}
        modules: {{root: {tmp_path / 'modules'}}}
        executor: {{type: slurm, poll: 0.5}}
        """)
    proc = run_cli("sync", "--progress", "plain", config)
    report = json.loads(run_cli("report", "--json", config).stdout)
    assert report["ok"] and report["meta"]["executor"] == "slurm"
    jobs = [p["slurm_job"] for p in report["packages"]]
    assert all(p["state"] == "done" and p["node"] for p in report["packages"])
    assert len(set(jobs)) == len(jobs) == len(report["packages"])
    built = artifacts(config)
    assert {"zlib", "bzip2", "xz", "libffi", "hello", "libyaml", "lz4", "libpng"} <= set(built)
    by_key = {p["key"]: p for p in report["packages"]}
    for a in built.values():
        assert a["state"] == "complete"
        with open(os.path.join(a["prefix"], ".sitedist", "spec.json")) as f:
            record = json.load(f)
        key = f"{a['name']}/{a['version']}-{a['id']}"
        assert record["executor"] == {"type": "slurm", "job": by_key[key]["slurm_job"], "node": by_key[key]["node"]}
    assert re.search(r"^modules: generation 1 published in ", proc.stdout, re.M), proc.stdout
    assert os.path.isdir(tmp_path / "modules" / "lmod")
    hello = subprocess.run(["bash", "-c", f"source /usr/share/lmod/lmod/init/bash && module use "
                            f"{tmp_path / 'modules' / 'lmod'} && module load hello && hello"],
                           capture_output=True, text=True)
    assert "Hello, world!" in hello.stdout, hello.stdout + hello.stderr

    again = run_cli("sync", "--progress", "plain", config)
    assert "nothing to build" in again.stdout and "Slurm job" not in again.stderr, again.stderr
    assert len(os.listdir(tmp_path / "store" / ".sitedist" / "jobs")) == 1  # one sync submitted jobs


def test_failing_build_cancels_its_dependents_and_names_job_and_log(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    recipe(recipes, "broken", ["echo 'broken is about to fail'", "false"])
    recipe(recipes, "needs-broken", [install("needs-broken")], deps=["broken"])
    recipe(recipes, "needs-needs", [install("needs-needs")], deps=["needs-broken"])
    recipe(recipes, "unrelated", ["sleep 2", install("unrelated"), 'env > "$PREFIX/build-env.txt"'])
    config = slurm_config(tmp_path, ["broken", "needs-broken", "needs-needs", "unrelated"], recipes)
    proc = run_cli("sync", "--keep-going", "--progress", "plain", config, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    ids = queued(proc.stderr)
    assert set(ids) >= {"broken", "needs-broken", "needs-needs", "unrelated"}, proc.stderr

    # The failure names the job, its node and its log, and shows the log's last lines.
    assert f"Slurm job {ids['broken']} on " in proc.stderr, proc.stderr
    log = re.search(r"job log: (\S+)", proc.stderr).group(1)
    assert os.path.isfile(log) and log.endswith(f".{ids['broken']}.out")
    assert "broken is about to fail" in proc.stderr and re.search(r"^  log: " + re.escape(log), proc.stdout, re.M)
    assert settled_state(ids["broken"]) == "FAILED"
    # Slurm itself cancelled the dependents (--kill-on-invalid-dep), without running them.
    for name in ("needs-broken", "needs-needs"):
        assert wait_for(lambda n=name: job_state(ids[n]) == ("CANCELLED", "DependencyNeverSatisfied"), 30,
                        f"{name} cancelled by Slurm"), job_state(ids[name])
    assert settled_state(ids["unrelated"]) == "COMPLETED"
    assert re.search(r"^skipped needs-broken\S*: needs broken", proc.stdout, re.M), proc.stdout
    text = run_cli("report", config).stdout
    assert f"    Slurm job {ids['broken']} on " in text and f"job log: {log}" in text, text

    built = artifacts(config)
    assert built["unrelated"]["state"] == "complete"
    assert {built[n]["state"] for n in ("broken", "needs-broken", "needs-needs")} == {"missing"}
    # No SLURM_* variable reached the build.
    with open(os.path.join(built["unrelated"]["prefix"], "build-env.txt")) as f:
        env = f.read()
    assert "PREFIX=" in env and "SLURM" not in env


def test_without_keep_going_a_failure_cancels_every_job_not_running_yet(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    recipe(recipes, "broken", ["false"])
    recipe(recipes, "later-a", [install("later-a")])
    recipe(recipes, "later-b", [install("later-b")], deps=["later-a"])
    config = slurm_config(tmp_path, ["broken", "later-a", "later-b"], recipes)
    # -j 2: two CPUs per job on a two-CPU node, so the jobs run one at a time, broken first (submitted first).
    proc = run_cli("sync", "-j", "2", "--progress", "plain", config, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    ids = queued(proc.stderr)
    assert settled_state(ids["broken"]) == "FAILED"
    for name in ("later-a", "later-b"):
        assert re.search(rf"^skipped {name}\S*: stopped after failure of broken", proc.stdout, re.M), proc.stdout
        assert settled_state(ids[name]) == "CANCELLED"
    wait_for(lambda: our_jobs(tmp_path) == [], 60, "the test's jobs to leave squeue")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_cancels_every_job_and_the_next_sync_completes(tmp_path, slurm, signum):
    recipes = tmp_path / "recipes"
    hold = tmp_path / "hold"  # while it exists, slow and other take a minute
    recipe(recipes, "slow", [f"if [ -e {hold} ]; then sleep 60; fi", install("slow")])
    recipe(recipes, "after-slow", [install("after-slow")], deps=["slow"])
    recipe(recipes, "other", [f"if [ -e {hold} ]; then sleep 60; fi", install("other")])
    config = slurm_config(tmp_path, ["slow", "after-slow", "other"], recipes)
    hold.touch()
    sync = start_sync("-j", "2", config)  # 2 CPUs per job on a 2-CPU node: one runs, the others wait

    def running_and_pending():
        states = {name: state for state, name in our_states(tmp_path).values() if "gcc" not in name}
        return len(states) == 3 and {"RUNNING", "PENDING"} <= set(states.values())

    wait_for(running_and_pending, BUSY_NODE, "a job running and the others pending")
    time.sleep(1)
    sync.send_signal(signum)
    output = sync.communicate(timeout=120)[0]
    assert sync.returncode == 130, output
    assert our_jobs(tmp_path) == [], output
    ids = queued(output)
    assert all(settled_state(ids[n]) == "CANCELLED" for n in ("slow", "after-slow", "other")), output
    states = {n: a["state"] for n, a in artifacts(config).items()}
    assert states.pop("gcc") == "complete" and set(states.values()) <= {"missing", "incomplete"}, states

    hold.unlink()
    run_cli("sync", config)
    assert all(a["state"] == "complete" for a in artifacts(config).values())
    assert our_jobs(tmp_path) == []


def test_local_and_slurm_syncs_of_overlapping_configs_build_each_artifact_once(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    builds = tmp_path / "builds.txt"
    for name in ("common-a", "common-b", "only-slurm", "only-local"):
        deps = ["common-a"] if name == "common-b" else []
        recipe(recipes, name, [f'echo "$PREFIX" >> {builds}', "sleep 2", install(name)], deps=deps)
    store = tmp_path / "store"
    via_slurm = slurm_config(tmp_path, ["common-a", "common-b", "only-slurm"], recipes, name="slurm.yml", store=store)
    local = site_config(tmp_path, {"common-a": None, "common-b": None, "only-local": None}, recipes=[recipes],
                        store=store, name="local.yml")
    first, second = start_sync("-j", "1", via_slurm), start_sync("-j", "1", local)
    outputs = [p.communicate(timeout=BUSY_NODE)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    with open(builds) as f:
        prefixes = f.read().split()
    assert len(prefixes) == len(set(prefixes)) == 4, prefixes
    assert all(a["state"] == "complete" for c in (via_slurm, local) for a in artifacts(c).values())


def test_scancel_mid_build_leaves_a_sound_store_and_the_next_sync_rebuilds(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    started, slow = tmp_path / "started", tmp_path / "slow"
    # While the file 'slow' exists the build hangs after installing half of itself; the same recipe
    # (the same artifact) builds quickly once it is gone.
    recipe(recipes, "victim", [install("victim"), f"touch {started}", f"if [ -e {slow} ]; then sleep 60; fi"])
    config = slurm_config(tmp_path, ["victim"], recipes)
    slow.touch()
    sync = start_sync(config)
    wait_for(started.exists, BUSY_NODE, "the build to start")
    job = our_jobs(tmp_path)[0]
    subprocess.run(["scancel", job], check=True)
    output = sync.communicate(timeout=90)[0]
    assert sync.returncode != 0 and f"Slurm job {job}" in output, output
    assert re.search(r"job log: \S+\.out", output), output
    victim = artifacts(config)["victim"]
    assert victim["state"] in ("missing", "incomplete")
    assert not os.path.exists(os.path.join(victim["prefix"], ".sitedist", "complete"))
    run_cli("verify", config)

    slow.unlink()
    proc = run_cli("sync", "--progress", "plain", config)
    assert re.search(r"queued victim \S+ as Slurm job", proc.stderr), proc.stderr
    assert artifacts(config)["victim"]["state"] == "complete"
    run_cli("verify", config)


def test_executor_settings_are_checked_before_anything_is_written(tmp_path):
    recipes = tmp_path / "recipes"
    recipe(recipes, "one", [install("one")])
    config = slurm_config(tmp_path, ["one"], recipes, extra="")
    text = open(config).read().replace("executor: {type: slurm, poll: 0.3}\n",
                                       "executor:\n  type: slurm\n  extra_args: [--exclusive, --job-name=x]\n")
    write(config, text)
    line = text.splitlines().index("  extra_args: [--exclusive, --job-name=x]") + 1
    proc = run_cli("sync", config, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{config}:{line}: executor.extra_args: '--job-name=x' sets --job-name" in proc.stderr, proc.stderr
    assert not (tmp_path / "store").exists()

    write(config, text.replace("extra_args: [--exclusive, --job-name=x]", "time: soon"))
    proc = run_cli("sync", config, check=False)
    assert proc.returncode == 2 and f"{config}:{line}" in proc.stderr and "time" in proc.stderr, proc.stderr
    assert not (tmp_path / "store").exists()


def test_the_job_of_a_complete_artifact_exits_at_once(tmp_path):
    """The single-artifact entry point a Slurm job runs: nothing to do for a complete artifact, and it
    says so in its result file; no config is even read."""
    prefix = tmp_path / "store" / "one" / "1.0-aaaaaaaaaaaaaaaaaaaa"
    write(prefix / ".sitedist" / "complete", "{}")
    result = tmp_path / "one.result.json"
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURMD_NODENAME": "node7"}
    began = time.time()
    proc = run_cli("build-artifact", tmp_path / "no-such-config.yml", "--key", "one/1.0-aaaaaaaaaaaaaaaaaaaa",
                   "--prefix", prefix, "--probe", tmp_path / "no-probe.json", "--result", result, env=env)
    assert "complete already" in proc.stderr and time.time() - began < 10
    with open(result) as f:
        outcome = json.load(f)
    assert outcome["state"] == "reused" and outcome["job"] == "4242" and outcome["node"] == "node7"
    assert "build-artifact" not in run_cli("--help").stdout  # hidden: it is not a command for people



def test_a_job_sbatch_refuses_stops_the_sync_with_slurms_reason(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    recipe(recipes, "one", [install("one")])
    config = site_config(tmp_path, {"one": None}, recipes=[recipes],
                         extra="executor: {type: slurm, partition: no-such-partition}\n")
    proc = run_cli("sync", config, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "sbatch refused the job of gcc" in proc.stderr and "--partition=no-such-partition" in proc.stderr, proc.stderr
    assert "invalid partition" in proc.stderr.lower(), proc.stderr
    assert our_jobs(tmp_path) == [] and all(a["state"] == "missing" for a in artifacts(config).values())


def test_a_job_installs_from_a_binary_cache_as_a_local_sync_would(tmp_path, slurm):
    recipes = tmp_path / "recipes"
    recipe(recipes, "cached", [install("cached")])
    recipe(recipes, "uncached", [install("uncached")])
    built_here = site_config(tmp_path, {"cached": None}, recipes=[recipes], store=tmp_path / "a", name="a.yml")
    run_cli("sync", built_here)
    run_cli("cache", "keygen", "site", tmp_path / "keys")
    run_cli("cache", "push", built_here, tmp_path / "cache", "--key", tmp_path / "keys" / "site.key")
    config = site_config(tmp_path, {"cached": None, "uncached": None}, recipes=[recipes], store=tmp_path / "b",
                         extra=f"executor: {{type: slurm, poll: 0.3}}\ncaches:\n  - {{url: {tmp_path / 'cache'}, "
                               f"trusted_keys: [{tmp_path / 'keys' / 'site.pub'}]}}\n")
    summary = json.loads(run_cli("sync", "--json", "--progress", "quiet", config).stdout)
    assert [k.split("/")[0] for k in summary["fetched"]] == ["cached"], summary
    assert "uncached" in {k.split("/")[0] for k in summary["built"]}, summary
    report = json.loads(run_cli("report", "--json", config).stdout)
    outcome = {p["label"].split()[0]: p.get("job_outcome") for p in report["packages"]}
    assert outcome["cached"] == "fetched" and outcome["uncached"] == "built", outcome
    assert all(p.get("slurm_job") for p in report["packages"])
