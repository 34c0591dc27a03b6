"""The core promise, end to end with real sources and the real compiler: `sitedist sync` builds the
shipped recipes into hash-named prefixes, the programs work, libraries find each other by RUNPATH,
a second sync builds nothing, and a changed input rebuilds exactly what depends on it."""

import gzip
import json
import os
import re
import subprocess

import pytest

from conftest import RECIPES, run_cli, site_config, tree_digest, write

ALL = ["zlib", "bzip2", "xz", "libffi", "hello", "libyaml", "lz4", "libpng"]


def plan(config):
    return {a["name"]: a for a in json.loads(run_cli("sync", "--dry-run", "--json", config).stdout)["artifacts"]}


@pytest.fixture(scope="module")
def stack(shared_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    config = site_config(tmp, {p: None for p in ALL}, store=shared_store)
    proc = run_cli("sync", "-j", "2", "--progress", "plain", config)
    return config, plan(config), proc


def test_full_stack_builds_and_runs(stack, tmp_path):
    config, artifacts, proc = stack
    for name in ALL:
        a = artifacts[name]
        assert a["state"] == "complete", a
        assert re.fullmatch(rf".*/{name}/{re.escape(a['version'])}-[a-z2-7]{{20}}", a["prefix"])
        assert os.path.exists(os.path.join(a["prefix"], ".sitedist", "complete"))
    hello = os.path.join(artifacts["hello"]["prefix"], "bin", "hello")
    assert subprocess.run([hello], capture_output=True, text=True, check=True).stdout == "Hello, world!\n"

    data = tmp_path / "data.txt"
    data.write_bytes(b"sitedist " * 50000)
    xz = os.path.join(artifacts["xz"]["prefix"], "bin", "xz")
    subprocess.run([xz, "-k", str(data)], check=True)
    packed = tmp_path / "data.txt.xz"
    assert packed.stat().st_size < data.stat().st_size / 10
    out = subprocess.run([xz, "-dc", str(packed)], capture_output=True, check=True).stdout
    assert out == data.read_bytes()
    lz4 = os.path.join(artifacts["lz4"]["prefix"], "bin", "lz4")
    subprocess.run([lz4, "-q", str(data), str(tmp_path / "d.lz4")], check=True)
    subprocess.run([lz4, "-q", "-d", str(tmp_path / "d.lz4"), str(tmp_path / "back")], check=True)
    assert (tmp_path / "back").read_bytes() == data.read_bytes()
    bzip2 = os.path.join(artifacts["bzip2"]["prefix"], "bin", "bzip2")
    assert subprocess.run([bzip2, "--help"], capture_output=True, text=True).stderr.startswith("bzip2")
    assert os.path.exists(os.path.join(artifacts["bzip2"]["prefix"], "lib", "libbz2.so.1.0"))


def test_libpng_finds_zlib_by_runpath(stack):
    _, artifacts, _ = stack
    png, zlib = artifacts["libpng"]["prefix"], artifacts["zlib"]["prefix"]
    lib = os.path.realpath(os.path.join(png, "lib", "libpng16.so"))
    dynamic = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
    runpath = re.search(r"\(RUNPATH\).*\[(.*)\]", dynamic).group(1).split(":")
    assert os.path.join(zlib, "lib") in runpath
    ldd = subprocess.run(["ldd", lib], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    libz = [line for line in ldd.splitlines() if "libz.so" in line][0]
    assert os.path.join(zlib, "lib") in libz and "/usr/lib" not in libz, ldd
    pngfix = os.path.join(png, "bin", "pngfix")
    ldd = subprocess.run(["ldd", pngfix], capture_output=True, text=True, check=True).stdout
    assert os.path.join(png, "lib", "libpng16.so") in ldd


def test_artifacts_are_sealed_with_spec_log_and_manifest(stack):
    _, artifacts, _ = stack
    prefix = artifacts["zlib"]["prefix"]
    meta = os.path.join(prefix, ".sitedist")
    spec = json.load(open(os.path.join(meta, "spec.json")))
    assert spec["id"] == artifacts["zlib"]["id"] and spec["doc"]["source"]["sha256"]
    manifest = json.load(open(os.path.join(meta, "manifest.json")))["files"]
    assert "include/zlib.h" in manifest and len(manifest["include/zlib.h"]["sha256"]) == 64
    with gzip.open(os.path.join(meta, "build.log.gz"), "rt") as f:
        assert "make install" in f.read()
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                assert not os.stat(path).st_mode & 0o222, f"{path} is writable"


def test_second_sync_builds_nothing_and_log_command(stack):
    config, artifacts, _ = stack
    before = tree_digest(*(a["prefix"] for a in artifacts.values()))
    proc = run_cli("sync", config)
    assert "nothing to build" in proc.stdout
    assert tree_digest(*(a["prefix"] for a in artifacts.values())) == before
    log = run_cli("log", config, "hello").stdout
    assert "hello" in log and "make install" in log


def test_changed_argument_rebuilds_package_and_dependents_only(shared_store, tmp_path):
    recipes = tmp_path / "recipes"
    text = open(os.path.join(RECIPES, "zlib.yml")).read()
    write(recipes / "zlib.yml", text.replace("build: autotools", "build: autotools\nconfigure_args: [--64]"))
    base = site_config(tmp_path, {"zlib": None, "libpng": None, "hello": None}, store=shared_store, name="a.yml")
    changed = site_config(tmp_path, {"zlib": None, "libpng": None, "hello": None}, store=shared_store,
                          recipes=[recipes], name="b.yml")
    run_cli("sync", base)
    old = plan(base)
    dry = run_cli("sync", "--dry-run", changed).stdout
    assert re.search(r"\[build\]\s+zlib 1.2.13 .*changed: script", dry), dry
    assert re.search(r"\[build\]\s+libpng 1.6.39 .*changed: depends.link.zlib", dry), dry
    assert re.search(r"\[present\]\s+hello 2.10", dry), dry
    run_cli("sync", changed)
    new = plan(changed)
    assert new["hello"]["id"] == old["hello"]["id"]
    assert new["zlib"]["id"] != old["zlib"]["id"] and new["libpng"]["id"] != old["libpng"]["id"]
    # Reverting: nothing to build, and the old prefixes are the ones in use again.
    assert "nothing to build" in run_cli("sync", base).stdout
    assert plan(base) == old


def test_failed_build_leaves_no_prefix_keeps_log(shared_store, tmp_path):
    recipes = tmp_path / "recipes"
    write(recipes / "broken.yml", """
        name: broken
        versions:
          "2.10": {url: "https://example.invalid/hello-2.10.tar.gz", sha256: "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"}
        build: autotools
        post_install:
          - echo "about to fail"
          - "false"
        """)
    store = tmp_path / "store"
    config = site_config(tmp_path, {"broken": None}, recipes=[recipes], store=store)
    proc = run_cli("sync", config, check=False)
    assert proc.returncode != 0
    assert "broken 2.10 failed" in proc.stderr and "about to fail" in proc.stderr
    log = re.search(r"log: (\S+build\.log)", proc.stderr).group(1)
    assert os.path.isfile(log) and "about to fail" in open(log).read()
    assert not (store / "broken").exists() or not list((store / "broken").iterdir()), "no prefix is left"
    assert os.path.isdir(os.path.dirname(log)), "the build directory is kept for inspection"
