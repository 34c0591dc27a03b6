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
from storetools import verify

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
    assert report["report"]["artifacts"] == 5  # the four packages and the host compiler's links
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
