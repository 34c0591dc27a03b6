"""Crash safety: a real `sitedist sync` is killed with SIGKILL at 20 moments, chosen by where the sync is.

The config builds zlib, libpng, hello and lz4 (the shipped recipes, reused from the shared store as an
upstream) plus `tiny`, a small C program and library linked against that zlib, and publishes modules.
Each round changes one input (hello's or tiny's build commands: a new artifact to build; or hello's
description: a new module tree only), starts a sync and kills it at its moment:

- moments inside real builds are found by watching the store: a partial download (`.part` file), the
  configure script's "checking" lines or the compiler's command lines in the build log, installed files
  in a prefix without a manifest, the "waiting for a lock" message;
- moments that last microseconds (the marker's temporary file, the module tree's switch) are reached
  with breakpoints: the test runs the real CLI under a small harness (HARNESS below) that wraps one
  function (or os.replace for one path) of the running sync to stop the process with SIGSTOP right
  there; the test then sends SIGKILL. The product code has no test hooks.

After each kill: `sitedist verify` finds no broken artifact (only incomplete prefixes and build
directories of the interrupted build, where the round expects them); the published module tree
references only complete artifacts and loads with Lmod (hello, tiny, lz4 and libpng run); the next sync
completes (except after "install", whose next sync is itself killed: a crash during recovery); then
verify is clean and no process of a killed build is left running.
"""

import glob
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from conftest import RECIPES, SOURCES, run_cli, site_config, write
from modtools import ModuleShell
from storetools import crash_harness, verify

BASE = {"zlib": None, "libpng": None, "hello": None, "lz4": None}

HARNESS = crash_harness(r"""
if point == "unpack":
    import sitedist.core.sources as sources
    run, member_path = sources._Unpacker.run, sources._Unpacker.path

    def run_counting(self, members):
        members = list(members)
        self.half, self.seen = len(members) // 2, 0
        return run(self, members)

    def path(self, parts):  # called as each member is written, after the whole archive was checked
        self.seen += 1
        if self.seen == self.half:
            pause("half of the archive unpacked")
        return member_path(self, parts)
    sources._Unpacker.run, sources._Unpacker.path = run_counting, path
elif point == "remove-prefix":
    import sitedist.core.store as store
    writable = store.make_writable

    def make_writable(path):
        writable(path)
        if match in path and "/.sitedist/" not in path:
            for dirpath, dirnames, filenames in os.walk(path):
                for name in filenames[:max(1, len(filenames) // 2)]:
                    os.unlink(os.path.join(dirpath, name))
            pause("half of an incomplete prefix removed")
    store.make_writable = make_writable
elif point == "rpath":
    import sitedist.build.builder as builder
    wrap(builder, "fix_rpaths", before=lambda prefix, *a: match in prefix)
elif point == "seal":
    import sitedist.core.store as store
    wrap(store, "seal", before=lambda prefix, *a: match in prefix)
elif point == "marker-tmp":
    wrap(os, "replace", before=marker)
elif point == "marker-done":
    wrap(os, "replace", after=marker)
elif point == "report":
    import sitedist.build.report as report
    wrap(report, "write_atomic", before=lambda path, text: path.endswith(".html") and "latest" not in path)
elif point == "render":
    from sitedist.modules.render import Renderer
    calls = []
    wrap(Renderer, "render", before=lambda *a, **k: calls.append(1) or len(calls) == 2)
elif point == "switch":
    import importlib
    wrap(importlib.import_module("sitedist.modules.publish"), "_switch", before=lambda *a: True)
elif point == "current-tmp":
    wrap(os, "replace", before=lambda src, dst, *a, **k: str(dst).endswith("/current"))
elif point == "gcroot":
    from sitedist.core.gcroots import InUse
    wrap(InUse, "__exit__", before=lambda *a: True)
elif point:
    raise SystemExit("unknown crash point " + point)
""")

TINY_C = '#include <stdio.h>\n#include <zlib.h>\n#include "tiny.h"\n' \
         'int main(void) { printf("tiny %s zlib %s\\n", tiny_round(), zlibVersion()); return 0; }\n'
LIBTINY_C = '#include "tiny.h"\nconst char *tiny_round(void) { return ROUND; }\n'


@pytest.fixture(scope="module")
def upstream(shared_store, tmp_path_factory):
    """zlib, libpng, hello and lz4 from the shipped recipes, built once into the shared store."""
    config = site_config(tmp_path_factory.mktemp("crash-upstream"), BASE, store=shared_store)
    run_cli("sync", "-j", "2", config)
    return shared_store


class SlowMirror:
    """The shared sources over HTTP on 127.0.0.1, 16 KiB every 20 ms: a download lasts about a second."""

    def __init__(self):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=SOURCES, **k)

            def copyfile(self, source, outputfile):
                try:
                    while chunk := source.read(16384):
                        outputfile.write(chunk)
                        time.sleep(0.02)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sync was killed mid-download

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


class Crashes:
    """The store, module tree, recipes and runs of one crash test."""

    def __init__(self, tmp, upstream, mirror_url):
        self.tmp = tmp
        self.store = tmp / "store"
        self.modules = tmp / "modules"
        self.recipes = tmp / "recipes"
        self.gate = tmp / "gate"
        self.runs = 0
        self.hello = yaml.safe_load(open(os.path.join(RECIPES, "hello.yml")))
        # A file name of its own: the upstream store's source cache (which a user stack reads) has hello
        # under its usual name, and the download moments need a real download from the slow mirror.
        self.hello["versions"]["2.10"]["filename"] = "hello-2.10-crash-test.tar.gz"
        self.tiny_round = 0
        self.tiny_gate = False
        src = self.recipes / "src" / "tiny"
        write(src / "tiny.c", TINY_C)
        write(src / "libtiny.c", LIBTINY_C)
        write(src / "tiny.h", "const char *tiny_round(void);\n")
        self.config = write(tmp / "site.yml", f"""
            store: {self.store}
            upstreams: [{upstream}]
            recipes: [{self.recipes}, {RECIPES}]
            mirrors: [{mirror_url}]
            packages: {{zlib: {{}}, libpng: {{}}, hello: {{}}, lz4: {{}}, tiny: {{}}}}
            modules: {{root: {self.modules}, formats: [lua, tcl]}}
            """)
        self.write_recipes()

    # --- inputs ----------------------------------------------------------------------------------

    def write_recipes(self):
        with open(self.recipes / "hello.yml", "w") as f:
            yaml.safe_dump(self.hello, f)
        lines = ['mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/include"',
                 f"$CC -shared -fPIC -DROUND='\"{self.tiny_round}\"' -o \"$PREFIX/lib/libtiny.so\" libtiny.c",
                 '$CC $CPPFLAGS -o "$PREFIX/bin/tiny" tiny.c -L"$PREFIX/lib" $LDFLAGS -ltiny -lz',
                 'cp tiny.h "$PREFIX/include/"']
        if self.tiny_gate:   # a build that stays in flight until the test opens the gate
            lines[1:1] = [f"touch {self.gate}.waiting", f"while [ ! -e {self.gate} ]; do sleep 0.05; done"]
        recipe = {"name": "tiny", "description": "a small program and library linked against zlib",
                  "versions": {"1.0": {"path": "src/tiny"}}, "depends": {"link": ["zlib"]},
                  "build": "commands", "commands": lines}
        with open(self.recipes / "tiny.yml", "w") as f:
            yaml.safe_dump(recipe, f)

    def change(self, what):
        """A new input: 'hello' or 'tiny' (a new artifact to build), 'modules' (a new module tree only)."""
        self.runs += 1
        if what == "hello":
            cache = self.tmp / "hello.config.cache"   # configure's cache, valid for every variant
            self.hello["configure_args"] = ["--disable-nls", f"--cache-file={cache}"]
            self.hello["pre_build"] = [f"echo variant {self.runs}",
                                       f"if [ -f {cache} ]; then sed -i '/^ac_cv_env_/d' {cache}; fi"]
        elif what == "tiny":
            self.tiny_round = self.runs
        else:
            self.hello["description"] = f"GNU Hello, module tree {self.runs}"
        self.write_recipes()

    # --- runs ------------------------------------------------------------------------------------

    def start(self, point="", match="", env=None):
        n = self.runs = self.runs + 1
        self.flag = self.tmp / f"paused-{n}"
        self.out = self.tmp / f"run-{n}.out"
        full = {**os.environ, "CRASH_AT": point, "CRASH_MATCH": match, "CRASH_FLAG": str(self.flag), **(env or {})}
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", HARNESS, "sync", "-j", "2", "--progress", "plain",
                                          self.config], stdout=out, stderr=subprocess.STDOUT, env=full)
        return self.proc

    def output(self, n=None):
        return open(self.tmp / f"run-{n or self.runs}.out", errors="replace").read()

    def wait_for(self, proc, moment, condition=None, timeout=300):
        """Until the breakpoint stopped ``proc`` or ``condition()`` holds; fail if the sync ends first."""
        flag, n = self.flag, self.runs
        deadline = time.monotonic() + timeout
        while not (flag.exists() if condition is None else condition()):
            if proc.poll() is not None:
                pytest.fail(f"the sync exited ({proc.returncode}) before the moment '{moment}':\n{self.output(n)}")
            if time.monotonic() > deadline:
                pytest.fail(f"moment '{moment}' not reached in {timeout}s:\n{self.output(n)}")
            time.sleep(0.005)

    @staticmethod
    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL

    def build_log(self, name):
        logs = glob.glob(str(self.store / ".sitedist" / "build" / f"{name}-*" / "build.log"))
        return open(logs[0], errors="replace").read() if logs else ""

    def incomplete_prefix(self, name):
        return [p for p in glob.glob(str(self.store / name / "*")) if not os.path.exists(f"{p}/.sitedist/complete")]

    # --- checks ----------------------------------------------------------------------------------

    def check_after_kill(self, moment, required=(), allowed=("incomplete", "interrupted-build")):
        code, out, _ = verify(self.config)
        found = {f["kind"] for f in out["report"]["errors"]}
        assert found <= set(allowed) | set(required), f"{moment}: verify after the kill:\n{json.dumps(out, indent=1)}"
        assert set(required) <= found, f"{moment}: expected {required} after the kill:\n{json.dumps(out, indent=1)}"
        assert code == (1 if found else 0)
        self.check_modules(moment)

    def check_modules(self, moment):
        current = self.modules / "current"
        manifest = json.load(open(current / "manifest.json"))
        incomplete = [p for p in manifest["prefixes"] if not os.path.exists(f"{p}/.sitedist/complete")]
        assert not incomplete, f"{moment}: the published tree references incomplete artifacts {incomplete}"
        sh = ModuleShell.lmod(self.modules / "lmod", home=self.tmp)
        r = sh.run("module load zlib libpng hello lz4 tiny; hello; tiny; lz4 --version 2>&1; libpng-config --version")
        assert "Hello, world!" in r.stdout and "1.9.4" in r.stdout and "1.6.39" in r.stdout, f"{moment}: {r.stdout}"
        assert re.search(r"^tiny \d+ zlib 1\.2\.13$", r.stdout, re.M), f"{moment}: {r.stdout}"

    def recover(self, moment):
        proc = run_cli("sync", "-j", "2", self.config, check=False)
        assert proc.returncode == 0, f"{moment}: the next sync failed:\n{proc.stdout}\n{proc.stderr}"
        code, out, _ = verify(self.config)
        assert code == 0 and not out["report"]["errors"], f"{moment}: verify after the next sync: {out}"
        assert not self.strays(), f"{moment}: processes of a killed build still run: {self.strays()}"
        self.check_modules(moment)
        return proc

    def strays(self):
        return [(p.pid, p.name()) for p in strays(self.store)]


def strays(store):
    """The processes of builds into ``store`` that still run."""
    build_root = os.path.join(str(store), ".sitedist", "build")
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("SITEDIST_BUILD_DIR", "").startswith(build_root):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_strays(store):
    """Cleanup after a failed test: no build process of it may outlive it."""
    for proc in strays(store):
        proc.kill()


@pytest.fixture
def crashes(upstream, tmp_path):
    mirror = SlowMirror()
    c = Crashes(tmp_path, upstream, mirror.url)
    run_cli("sync", "-j", "2", c.config)   # tiny is built, everything else comes from the upstream
    c.check_modules("before the first kill")
    yield c
    mirror.server.shutdown()
    kill_strays(c.store)


def test_sigkill_at_twenty_moments(crashes):
    c = crashes
    moments = []

    def crash(moment, change, point="", match="", condition=None, required=("incomplete",), recover=True, env=None):
        if change:
            c.change(change)
        proc = c.start(point, match, env)
        c.wait_for(proc, moment, condition)
        c.kill(proc)
        c.check_after_kill(moment, required)
        if recover:
            c.recover(moment)
        moments.append(moment)

    hello_log = lambda: c.build_log("hello")  # noqa: E731
    crash("download: a .part file in the source cache", "hello",
          condition=lambda: glob.glob(str(c.store / ".sitedist" / "src" / "*" / "*.part-*")))
    crash("unpack: half of the tarball unpacked", "hello", "unpack")
    crash("configure running", "hello", condition=lambda: "\nchecking " in hello_log())
    crash("compiling", "hello", condition=lambda: re.search(r"\n\S*gcc .* -c -o ", hello_log()))
    crash("make install running", "hello", recover=False,
          condition=lambda: any(os.listdir(p) and not os.path.exists(f"{p}/.sitedist")
                                for p in c.incomplete_prefix("hello")))
    crash("recovery killed while removing the incomplete prefix", None, "remove-prefix", "/hello/")
    crash("probing the host (cold probe cache)", "modules", required=(),
          env={"XDG_CACHE_HOME": str(c.tmp / f"cache-{c.runs}")},
          condition=lambda: psutil.Process(c.proc.pid).children())
    crash("plan printed, nothing written yet", "tiny", required=(),
          condition=lambda: re.search(r"\d+ artifacts: \d+ present", c.output()))

    # A sync waiting for another's build lock is killed; the holder finishes.
    c.change("tiny")
    holder = c.start("rpath", "/tiny/")
    c.wait_for(holder, "holder at its RUNPATH step")
    waiter = c.start()
    c.wait_for(waiter, "waiting", lambda: "waiting for a lock" in c.output())
    c.kill(waiter)
    c.check_after_kill("a sync waiting for a lock", required=())
    holder.send_signal(signal.SIGCONT)
    assert holder.wait() == 0
    c.recover("a sync waiting for a lock")
    moments.append("a sync waiting for a lock")

    # The holder is killed while another sync waits: the waiter takes the lock over and builds.
    c.change("tiny")
    holder = c.start("rpath", "/tiny/")
    c.wait_for(holder, "holder at its RUNPATH step")
    waiter = c.start()
    waiter_run = c.runs
    c.wait_for(waiter, "waiting", lambda: "waiting for a lock" in c.output())
    c.kill(holder)
    assert waiter.wait() == 0, c.output(waiter_run)
    c.check_after_kill("the lock holder, while another sync waits", required=())
    c.recover("the lock holder, while another sync waits")
    moments.append("the lock holder, while another sync waits")

    c.tiny_gate = True
    c.change("tiny")
    crash("two builds in flight", "hello", required=("incomplete", "interrupted-build"), recover=False,
          condition=lambda: "\nchecking " in hello_log() and os.path.exists(f"{c.gate}.waiting"))
    assert len(c.incomplete_prefix("hello") + c.incomplete_prefix("tiny")) == 2
    c.gate.touch()
    c.tiny_gate = False
    c.recover("two builds in flight")

    crash("fixing RUNPATHs", "tiny", "rpath", "/tiny/")
    crash("sealing: manifest written, not read-only yet", "tiny", "seal", "/tiny/")
    crash("the marker's temporary file written, not renamed", "tiny", "marker-tmp", "/tiny/")
    crash("marker in place, its directory not yet read-only", "tiny", "marker-done", "/tiny/", required=())
    crash("writing the build report", "tiny", "report", required=())
    crash("a module tree generation half written", "modules", "render", required=())
    crash("a generation renamed, not switched to", "modules", "switch", required=())
    crash("the new 'current' link made, not renamed", "modules", "current-tmp", required=())
    crash("published, the sync's GC root not yet removed", "modules", "gcroot", required=())
    assert len(moments) == 20, moments



def test_a_quiet_process_left_by_a_killed_build_is_stopped_before_the_rebuild(tmp_path):
    """A killed sync's build commands die of SIGPIPE at their next line of output, but a quiet one (here
    a loop writing into the prefix, output discarded) lives on; the next build of that artifact must stop
    it before it builds into the prefix again."""
    from storetools import artifact, config, synthetic

    recipes = tmp_path / "recipes"
    first = tmp_path / "first-attempt"
    loop = ("sh -c 'while :; do mkdir -p \"$0/share\" 2>/dev/null && date >> \"$0/share/tick\" 2>/dev/null; "
            "sleep 0.02; done' \"$PREFIX\" >/dev/null 2>&1")
    synthetic(recipes, "quiet", commands=[f"if [ ! -e {first} ]; then touch {first}; {loop}; fi"])
    cfg = config(tmp_path, ["quiet"], recipes)
    with open(tmp_path / "out", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sitedist.cli.main", "sync", cfg], stdout=out,
                                stderr=subprocess.STDOUT)
    ticks = glob.glob(str(tmp_path / "store" / "quiet" / "*" / "share" / "tick"))
    while not ticks:
        assert proc.poll() is None, open(tmp_path / "out").read()
        time.sleep(0.01)
        ticks = glob.glob(str(tmp_path / "store" / "quiet" / "*" / "share" / "tick"))
    Crashes.kill(proc)
    size = os.path.getsize(ticks[0])
    while os.path.getsize(ticks[0]) == size:   # the loop outlived the sync
        time.sleep(0.01)
    try:
        run_cli("sync", cfg)
        prefix = artifact(tmp_path / "store", "quiet")
        assert sorted(os.listdir(f"{prefix}/share")) == ["quiet"], "nothing of the killed build in the new prefix"
        assert verify(cfg)[0] == 0
        assert not strays(tmp_path / "store")
    finally:
        kill_strays(tmp_path / "store")
