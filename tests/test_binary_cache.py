"""Binary caches (issue 15), end to end with real builds: zlib, xz, libpng and hello are built once in
store A (with ``padded_length``), pushed signed into a directory cache, and installed into empty stores
at other paths, shorter and longer than A's, from the directory and over HTTP from a web server on
127.0.0.1: nothing is built, the programs run, ldd and pkg-config name only the new store, no file holds
A's path, verify is clean and the modules load with Lmod. Bad entries (tampered, untrusted, unsigned,
truncated, a server dying, a manifest that lies, an escaping member) install nothing and fall back to
building, or fail under --cache-only."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from conftest import RECIPES, SOURCES, run_cli, write
from modtools import ModuleShell
from storetools import crash_harness, verify

PKGS = ["zlib", "xz", "libpng", "hello"]
PADDED = 160


def config_text(store, packages, caches="", modules=None, padded=None):
    store_line = f"store: {{root: {store}, padded_length: {padded}}}" if padded else f"store: {store}"
    text = (f"{store_line}\nrecipes: [{RECIPES}]\nmirrors: [{SOURCES}]\n"
            f"packages: {{{', '.join(f'{p}: {{}}' for p in packages)}}}\n")
    if modules:
        text += f"modules: {{root: {modules}, formats: [lua]}}\n"
    return text + caches


def caches(url, key=None, signed=True):
    if not signed:
        return f"caches:\n  - {{url: {url}, signed: false}}\n"
    return f"caches:\n  - {{url: {url}, trusted_keys: [{key}]}}\n"


def sync_json(config, *args, check=True):
    proc = run_cli("sync", "--json", "--progress", "quiet", *args, config, check=check)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def package_builds(summary):
    """Keys of the package artifacts a sync built (not host compiler links, not fetched ones)."""
    return [k for k in summary["built"] if k.split("/")[0] in PKGS]


def plan(config):
    return {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Store A (padded), its keys and a signed directory cache of the four packages."""
    tmp = tmp_path_factory.mktemp("bincache")
    # Long enough that the "short" store below is shorter than A's root as written; padded to PADDED.
    root = tmp_path_factory.getbasetemp().parent / "bincache-store-A-with-a-name-long-enough-for-the-tests"
    config = write(tmp / "a.yml", config_text(root, PKGS, padded=PADDED))
    run_cli("sync", "-j", "2", "--progress", "quiet", config)
    artifacts = plan(config)
    store_a = os.path.dirname(os.path.dirname(artifacts["zlib"]["prefix"]))
    assert len(store_a) == PADDED and store_a.startswith(str(root) + "/")
    run_cli("cache", "keygen", "site", tmp / "keys")
    run_cli("cache", "keygen", "stranger", tmp / "keys")
    cache = tmp / "cache"
    out = run_cli("cache", "push", config, cache, "--key", tmp / "keys" / "site.key").stdout
    assert "4 pushed" in out, out
    return {"tmp": tmp, "config": config, "root": str(root), "store": store_a, "artifacts": artifacts,
            "cache": str(cache), "pub": str(tmp / "keys" / "site.pub"),
            "stranger": str(tmp / "keys" / "stranger.key")}


def test_push_layout_and_noop(site):
    cache = site["cache"]
    index = json.load(open(os.path.join(cache, "index.json")))["entries"]
    ids = {a["id"] for n, a in site["artifacts"].items() if n in PKGS}
    assert set(index) == ids
    for aid in ids:
        assert os.path.isfile(os.path.join(cache, "archives", f"{aid}.tar.gz"))
        doc = json.load(open(os.path.join(cache, "manifests", f"{aid}.json")))
        m = doc["manifest"]
        assert m["id"] == aid and m["prefix"].startswith(site["store"] + "/") and doc["signatures"][0]["key"] == "site"
        assert all(len(e["sha256"]) == 64 for e in m["files"].values() if "sha256" in e)
    png = json.load(open(os.path.join(cache, "manifests", f"{site['artifacts']['libpng']['id']}.json")))["manifest"]
    assert png["relocate"]["lib/pkgconfig/libpng16.pc"] == ["text"]
    assert "rpath" in png["relocate"]["bin/pngfix"]
    before = {f: os.stat(os.path.join(cache, "archives", f)).st_mtime_ns for f in os.listdir(os.path.join(cache, "archives"))}
    out = run_cli("cache", "push", site["config"], cache, "--key", site["pub"].replace(".pub", ".key")).stdout
    assert "0 pushed, 4 already" in out
    assert before == {f: os.stat(os.path.join(cache, "archives", f)).st_mtime_ns
                      for f in os.listdir(os.path.join(cache, "archives"))}


def check_store(site, store, modules, home):
    """Everything the issue asks of a store filled from the cache."""
    artifacts = {n: a for n, a in plan_of(store).items()}
    for name in PKGS:
        assert artifacts[name]["prefix"].startswith(str(store) + "/")
    hello = os.path.join(artifacts["hello"]["prefix"], "bin", "hello")
    assert subprocess.run([hello], capture_output=True, text=True, check=True).stdout == "Hello, world!\n"
    xz = os.path.join(artifacts["xz"]["prefix"], "bin", "xz")
    data = os.path.join(home, "data.txt")
    with open(data, "w") as f:
        f.write("relocated " * 10000)
    packed = subprocess.run([xz, "-c", data], capture_output=True, check=True).stdout
    assert subprocess.run([xz, "-dc"], input=packed, capture_output=True, check=True).stdout == open(data, "rb").read()
    png = artifacts["libpng"]["prefix"]
    assert subprocess.run([os.path.join(png, "bin", "libpng-config"), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip() == "1.6.39"
    for prefix in (a["prefix"] for a in artifacts.values()):
        for dirpath, _, files in os.walk(prefix):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or open(path, "rb").read(4) != b"\x7fELF" or ".so" not in name and "bin" not in dirpath:
                    continue
                ldd = subprocess.run(["ldd", path], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
                for line in ldd.splitlines():
                    if "=>" in line and "not found" in line:
                        raise AssertionError(f"{path}: {line}")
                    target = line.split("=>")[-1].strip().split(" (")[0]
                    if target.startswith("/") and not target.startswith(("/lib", "/usr/lib")):
                        assert target.startswith(str(store) + "/"), (path, line)
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "libpng"], capture_output=True, text=True, check=True,
                        env={"PATH": "/usr/bin:/bin", "PKG_CONFIG_PATH": os.path.join(png, "lib", "pkgconfig")}).stdout
    assert f"-I{png}/include/libpng16" in pc and f"-L{png}/lib" in pc, pc
    grep = subprocess.run(["grep", "-r", "-l", "-a", "-F", "-e", site["store"], "-e", site["root"] + "/", str(store)],
                          capture_output=True, text=True)
    assert grep.returncode == 1 and grep.stdout == "", grep.stdout
    code, report, _ = verify(str(store.parent / "b.yml"))
    assert code == 0 and report["report"]["ok"] and report["report"]["errors"] == [], report
    assert report["report"]["artifacts"] == 6  # the four packages, the host compiler's and make's links
    sh = ModuleShell.lmod(os.path.join(modules, "lmod"), home=home)
    r = sh.run("module load libpng hello xz; hello; snap loaded; pkg-config --libs libpng")
    assert "Hello, world!" in r.stdout and f"-L{png}/lib" in r.stdout
    assert any(p.startswith(artifacts["hello"]["prefix"]) for p in r.snaps["loaded"]["PATH"].split(":"))


def plan_of(store):
    return plan(str(store.parent / "b.yml"))


def install_from(site, store, url, tmp_path, *args):
    modules = tmp_path / "modules"
    config = write(store.parent / "b.yml", config_text(store, PKGS, caches(url, site["pub"]), modules))
    dry = run_cli("sync", "--dry-run", config).stdout
    assert dry.count("[cache]") == 4 and "4 from caches" in dry, dry
    _, summary = sync_json(config)
    assert package_builds(summary) == [] and len(summary["fetched"]) == 4, summary
    return modules


@pytest.mark.parametrize("length", ["shorter", "longer"])
def test_install_from_directory_cache(site, tmp_path, length):
    if length == "shorter":
        store = tmp_path / "s"
        assert len(str(store)) < len(site["root"])
    else:
        store = tmp_path / ("l" * (PADDED - len(str(tmp_path)) - 40))
        assert len(site["root"]) < len(str(store)) < PADDED
    store.mkdir()
    modules = install_from(site, store, site["cache"], tmp_path)
    check_store(site, store, modules, tmp_path)
    _, again = sync_json(str(store.parent / "b.yml"))
    assert again["built"] == [] and again["fetched"] == []


class Server:
    """A web server on 127.0.0.1 serving a directory (python's http.server, in a thread)."""

    def __init__(self, directory, handler=http.server.SimpleHTTPRequestHandler):
        class Quiet(handler):
            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_install_from_http_cache(site, tmp_path):
    server = Server(site["cache"])
    try:
        store = tmp_path / "h"
        store.mkdir()
        modules = install_from(site, store, server.url, tmp_path)
    finally:
        server.close()
    check_store(site, store, modules, tmp_path)


# --- entries that must not be installed ----------------------------------------------------------

def resign(cache, aid, change, key):
    """Rewrite the manifest of ``aid`` with ``change(manifest)`` applied and signed by ``key`` (a secret
    key file), or unsigned when ``key`` is None."""
    from sitedist.cache import keys

    path = os.path.join(cache, "manifests", f"{aid}.json")
    doc = json.load(open(path))
    change(doc["manifest"])
    doc["signatures"] = [keys.sign(doc["manifest"], keys.load_secret(key))] if key else []
    with open(path, "w") as f:
        json.dump(doc, f)


def archive_entry(cache, aid, path):
    """Point the manifest's archive fields at the archive file as it now is."""
    import hashlib

    data = open(path, "rb").read()

    def change(m):
        m["archive"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return change


def escaping_archive(cache, aid):
    """The archive with one more member, '../escaped', as a hostile cache could serve it."""
    import io
    import tarfile

    path = os.path.join(cache, "archives", f"{aid}.tar.gz")
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src.getmembers()]
    with tarfile.open(path, "w:gz") as out:
        for m, data in members:
            out.addfile(m, io.BytesIO(data) if data is not None else None)
        evil = tarfile.TarInfo("../escaped")
        evil.size = 4
        out.addfile(evil, io.BytesIO(b"evil"))
    return path


def spoil(kind, site, cache):
    """Make the zlib entry of ``cache`` bad in the way ``kind`` names; returns the expected message."""
    aid = site["artifacts"]["zlib"]["id"]
    archive = os.path.join(cache, "archives", f"{aid}.tar.gz")
    trusted = site["pub"].replace(".pub", ".key")
    if kind == "tampered":
        data = bytearray(open(archive, "rb").read())
        data[len(data) // 2] ^= 0x01
        open(archive, "wb").write(bytes(data))
        return "does not match its manifest"
    if kind == "untrusted":
        resign(cache, aid, lambda m: None, site["stranger"])
        return "does not verify with any trusted key"
    if kind == "unsigned":
        resign(cache, aid, lambda m: None, None)
        return "is not signed"
    if kind == "truncated":
        data = open(archive, "rb").read()
        open(archive, "wb").write(data[:len(data) // 2])
        return "does not match its manifest"
    if kind == "file-list":
        resign(cache, aid, lambda m: m["files"].pop("include/zlib.h"), trusted)
        return "which its manifest does not list"
    if kind == "escaping":
        resign(cache, aid, archive_entry(cache, aid, escaping_archive(cache, aid)), trusted)
        return "refusing to unpack"
    raise ValueError(kind)


def fresh(site, tmp_path, url, packages=("zlib",), signed=True):
    store = tmp_path / "c"
    config = write(tmp_path / "c.yml", config_text(store, packages, caches(url, site["pub"], signed)))
    return store, config


def nothing_installed(store):
    """No artifact of a package in ``store`` (complete or not), no download left behind, nothing outside."""
    for name in PKGS:
        assert not os.path.exists(os.path.join(store, name)) or os.listdir(os.path.join(store, name)) == [], name
    tmp = os.path.join(store, ".sitedist", "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []
    assert not os.path.exists(os.path.join(store, "zlib", "escaped"))


@pytest.mark.parametrize("kind", ["tampered", "untrusted", "unsigned", "truncated", "file-list", "escaping"])
def test_bad_entry_installs_nothing_under_cache_only(site, tmp_path, kind):
    cache = tmp_path / "cache"
    shutil.copytree(site["cache"], cache)
    expected = spoil(kind, site, str(cache))
    store, config = fresh(site, tmp_path, cache)
    proc = run_cli("sync", "--cache-only", "--progress", "quiet", config, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert expected in proc.stderr and "--cache-only forbids building" in proc.stderr, proc.stderr
    nothing_installed(store)
    assert not os.path.exists(tmp_path / "escaped") and not os.path.exists(store / "escaped")


def test_bad_entry_falls_back_to_building(site, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(site["cache"], cache)
    expected = spoil("tampered", site, str(cache))
    store, config = fresh(site, tmp_path, cache)
    proc, summary = sync_json(config)
    assert package_builds(summary) == [f"zlib/1.2.13-{site['artifacts']['zlib']['id']}"] and summary["fetched"] == []
    assert expected in proc.stderr
    assert verify(config)[0] == 0


class Dying(http.server.SimpleHTTPRequestHandler):
    """Sends the full Content-Length of an archive, then half of it, then drops the connection."""

    def copyfile(self, source, outputfile):
        if self.path.startswith("/archives/"):
            data = source.read()
            outputfile.write(data[:len(data) // 2])
            outputfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        super().copyfile(source, outputfile)


def test_server_dying_mid_download(site, tmp_path):
    server = Server(site["cache"], Dying)
    try:
        store, config = fresh(site, tmp_path, server.url)
        proc = run_cli("sync", "--cache-only", "--progress", "quiet", config, check=False)
    finally:
        server.close()
    # urllib reads the short body without an error: the size and sha256 checks catch it
    assert proc.returncode != 0 and ("cannot download archives/" in proc.stderr
                                     or "a truncated download" in proc.stderr), proc.stderr
    nothing_installed(store)


class Slow(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        import time

        time.sleep(3)
        try:
            super().do_GET()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


def test_cache_down_or_slow_is_reported_once_and_skipped(site, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(site["cache"], Slow)
    try:
        store = tmp_path / "c"
        text = config_text(store, ["zlib", "libpng"], (
            f"caches:\n  - {{url: 'http://127.0.0.1:{port}', signed: false}}\n"
            f"  - {{url: '{server.url}', signed: false, timeout: 0.5}}\n"))
        config = write(tmp_path / "c.yml", text)
        proc = run_cli("sync", "--dry-run", config)
    finally:
        server.close()
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: cache skipped")]
    assert len(notes) == 2, proc.stderr
    assert f"127.0.0.1:{port}" in notes[0] and "timed out" in notes[1], notes
    assert "[cache]" not in proc.stdout and "[build]" in proc.stdout


def test_no_cache_builds(site, tmp_path):
    store, config = fresh(site, tmp_path, site["cache"])
    dry = run_cli("sync", "--dry-run", "--no-cache", config).stdout
    assert "[cache]" not in dry and "[build]    zlib" in dry
    bad = write(tmp_path / "bad.yml", config_text(store, ["zlib"], "caches:\n  - {url: /x}\n"))
    proc = run_cli("sync", "--dry-run", bad, check=False)
    assert proc.returncode == 2 and "bad.yml:" in proc.stderr and "caches" in proc.stderr, proc.stderr


def test_longer_path_without_padding_is_refused(shared_store, tmp_path):
    """An artifact built in an unpadded store holds its path in binary strings (hello's debug info): a
    longer store path cannot be written over it in place; the error names the artifact, the file and the
    setting, and nothing is installed."""
    a = write(tmp_path / "a.yml", config_text(shared_store, ["hello"]))
    run_cli("sync", "--progress", "quiet", a)
    run_cli("cache", "keygen", "k", tmp_path / "keys")
    run_cli("cache", "push", a, tmp_path / "cache", "--key", tmp_path / "keys" / "k.key")
    store = tmp_path / ("x" * (len(str(shared_store)) + 20))
    config = write(tmp_path / "b.yml", config_text(store, ["hello"], caches(tmp_path / "cache", tmp_path / "keys" / "k.pub")))
    proc = run_cli("sync", "--cache-only", "--progress", "quiet", config, check=False)
    assert proc.returncode != 0
    assert "hello 2.10" in proc.stderr and "bin/hello" in proc.stderr and "padded_length" in proc.stderr, proc.stderr
    nothing_installed(store)


# --- SIGKILL during an install from a cache --------------------------------------------------------
# The crash harness of test_crash.py (storetools.crash_harness), with the moments of an install.

HARNESS = crash_harness(r"""

def nth(n):
    calls = []
    return lambda *a, **k: calls.append(1) or len(calls) == n


import sitedist.cache.install as inst
import sitedist.cache.relocate as reloc
import sitedist.cache.remote as remote
import sitedist.core.store as store

if point == "download":
    opened = remote.Cache._open

    def _open(self, rel):
        f = opened(self, rel)
        if match in rel and rel.startswith("archives/"):
            class Slow:
                count = 0
                def __enter__(self):
                    return self
                def __exit__(self, *a):
                    f.close()
                def read(self, n=-1):
                    Slow.count += 1
                    if Slow.count == 3:
                        pause("mid-download")
                    return f.read(4096)
            return Slow()
        return f
    remote.Cache._open = _open
elif point == "downloaded":
    wrap(remote.Cache, "download", after=lambda self, manifest, dest: manifest["id"] == match)
elif point == "locked":
    wrap(store.Store, "prepare_prefix", after=lambda self, prefix: match in prefix)
elif point == "unpack-half":
    pick = nth(3)
    wrap(os, "open", before=lambda path, flags, *a, **k: match in str(path) and flags & os.O_EXCL and pick())
elif point == "unpacked":
    wrap(inst, "unpack", after=lambda archive, dest: match in dest)
elif point == "checked":
    wrap(inst, "_check_files", after=lambda prefix, *a: match in prefix)
elif point == "relocate-half":
    wrap(reloc, "_read", after=lambda path: match in path and pick())
    pick = nth(3)
elif point == "relocated":
    wrap(inst, "relocate", after=lambda prefix, *a: match in prefix)
elif point == "seal":
    wrap(store, "seal", before=lambda prefix, *a: match in prefix)
elif point == "marker-tmp":
    wrap(os, "replace", before=marker)
elif point == "marker-done":
    wrap(os, "replace", after=marker)
else:
    raise SystemExit("unknown crash point " + point)
""")

MOMENTS = ["download", "downloaded", "locked", "unpack-half", "unpacked", "checked", "relocate-half",
           "relocated", "seal", "marker-tmp", "marker-done"]


def test_sigkill_during_cache_install(site, tmp_path):
    import signal
    import sys
    import time

    png = site["artifacts"]["libpng"]
    for moment in MOMENTS:
        tmp = tmp_path / moment
        tmp.mkdir()
        store, config = tmp / "store", write(tmp / "k.yml", config_text(tmp / "store", ["zlib", "libpng"],
                                                                          caches(site["cache"], site["pub"])))
        flag = tmp / "flag"
        env = {**os.environ, "CRASH_AT": moment, "CRASH_MATCH": png["id"], "CRASH_FLAG": str(flag)}
        with open(tmp / "out", "w") as out:
            proc = subprocess.Popen([sys.executable, "-c", HARNESS, "sync", "--progress", "plain", config],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, f"{moment}: the sync ended first:\n{open(tmp / 'out').read()}"
            assert time.monotonic() < deadline, f"{moment}: not reached"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        prefix = os.path.join(store, "libpng", f"1.6.39-{png['id']}")
        complete = os.path.exists(os.path.join(prefix, ".sitedist", "complete"))
        assert complete == (moment == "marker-done"), moment
        code, out, _ = verify(config)
        found = {f["kind"] for f in out["report"]["errors"]}
        assert found <= {"incomplete"}, f"{moment}: {json.dumps(out, indent=1)}"
        # The next sync finishes, from the cache, and leaves nothing behind.
        _, summary = sync_json(config)
        assert package_builds(summary) == [], f"{moment}: {summary}"
        assert summary["fetched"] == ([] if complete else [f"libpng/1.6.39-{png['id']}"]), (moment, summary)
        code, out, _ = verify(config)
        assert code == 0 and out["report"]["errors"] == [], f"{moment}: {out}"
        assert os.listdir(store / ".sitedist" / "tmp") == [], moment
        assert subprocess.run([os.path.join(prefix, "bin", "libpng-config"), "--version"], capture_output=True,
                              text=True, check=True).stdout.strip() == "1.6.39"
        grep = subprocess.run(["grep", "-r", "-l", "-a", "-F", site["store"], str(store)], capture_output=True, text=True)
        assert grep.stdout == "", (moment, grep.stdout)


def test_user_stack_uses_site_store_in_place_and_cache_for_the_rest(site, tmp_path):
    """A user's stack lists the site store as upstream and the site's cache: zlib (complete in the site
    store) is used in place, libpng (only in the cache) is installed into the user's store and finds the
    site's zlib by RUNPATH."""
    site_store = tmp_path / "site-store"
    s_config = write(tmp_path / "s.yml", config_text(site_store, ["zlib"], caches(site["cache"], site["pub"])))
    run_cli("sync", "--cache-only", "--progress", "quiet", s_config)
    user_store = tmp_path / "home" / "store"
    u_config = write(tmp_path / "u.yml", config_text(user_store, ["zlib", "libpng"], caches(site["cache"], site["pub"]))
                     + f"upstreams: [{site_store}]\n")
    _, summary = sync_json(u_config, "--cache-only")
    assert summary["fetched"] == [f"libpng/1.6.39-{site['artifacts']['libpng']['id']}"], summary
    zlib = plan(u_config)["zlib"]["prefix"]
    png = plan(u_config)["libpng"]["prefix"]
    assert zlib.startswith(str(site_store) + "/") and png.startswith(str(user_store) + "/")
    ldd = subprocess.run(["ldd", os.path.join(png, "bin", "pngfix")], capture_output=True, text=True, check=True).stdout
    assert f"{zlib}/lib/libz.so.1" in ldd and f"{png}/lib/libpng16.so.16" in ldd, ldd
    grep = subprocess.run(["grep", "-r", "-l", "-a", "-F", site["store"], str(user_store)], capture_output=True, text=True)
    assert grep.stdout == ""
    assert verify(u_config)[0] == 0
