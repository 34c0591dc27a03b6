"""One durable protocol for every switch (issue 11 item 9): module trees and profiles flush a new
generation's files and directories before renaming it into place, flush the generations directory,
then switch the link and flush its directory; a build's directories reach the disk before its manifest.
Spies on os.fsync, os.rename and os.replace record the order; nothing is built or spawned."""

import os
import shutil
import subprocess
import sys

import pytest

from sitedist import profiles
from sitedist.core.store import Store
from sitedist.modules import ModuleEntry, publish

EXPECTED = ["write record", "flush staged", "rename into place", "flush generations directory", "switch",
            "flush link directory"]


@pytest.fixture
def spy(monkeypatch):
    events = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *a, **k):
        events.append(("rename", os.path.abspath(src), os.path.abspath(dst)))
        return real_rename(src, dst, *a, **k)

    def replace(src, dst, *a, **k):
        events.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return events


def protocol(events, gens, link, record):
    """The spied events of one publish as steps of the protocol, plus the paths (relative to the staging
    directory) that were flushed before the rename into place."""
    steps, flushed = [], set()

    def add(step):
        if not steps or steps[-1] != step:
            steps.append(step)

    for event in events:
        kind, path = event[0], event[-1]
        staged = os.path.dirname(path) == gens and os.path.basename(path).startswith(".staging-")
        inside = os.path.relpath(path, gens).split(os.sep)[0].startswith(".staging-")
        if kind == "fsync" and inside:
            rel = os.path.relpath(path, gens).split(os.sep, 1)
            flushed.add(rel[1] if len(rel) > 1 else ".")
            add("flush staged")
        elif kind == "replace" and inside and path.endswith(os.sep + record):
            add("write record")
        elif kind == "rename" and os.path.basename(event[1]).startswith(".staging-") and os.path.dirname(path) == gens:
            add("rename into place")
        elif kind == "fsync" and path == gens:
            add("flush generations directory")
        elif kind == "replace" and path == link:
            add("switch")
        elif kind == "fsync" and path == os.path.dirname(link) and steps and steps[-1] == "switch":
            add("flush link directory")
            break
        elif kind == "rename" and os.path.basename(event[1]) == ".spare" and staged:
            add("reuse the spare")
        elif staged:
            add(f"other {kind} of the staging directory")
    return steps, flushed


def entries_of(generation):
    """Every file and directory of a generation, relative to it ('.' for itself)."""
    out = {"."}
    for dirpath, dirnames, filenames in os.walk(generation):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                out.add(os.path.relpath(path, generation))
    return out


def test_module_trees_and_profiles_switch_by_the_same_durable_protocol(tmp_path, spy):
    prefix = tmp_path / "store" / "app" / "1.0-abc"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "app").write_text("#!/bin/sh\n")

    root = tmp_path / "modules"
    entry = ModuleEntry(name="app", version="1.0", prefix=str(prefix), artifact_id="abc", subdirs=("bin",))
    result = publish([entry], {"root": str(root), "formats": ["lua", "tcl"]})
    module_steps, module_flushed = protocol(spy, str(root / "generations"), str(root / "current"), "manifest.json")
    spy.clear()

    profile_root = tmp_path / "profiles" / "main"
    plan = profiles.ProfilePlan(name="main", root=str(profile_root),
                                members=[profiles.Member(name="app", label="app 1.0", prefix=str(prefix))],
                                links={"bin/app": str(prefix / "bin" / "app")}, dirs=["bin"], shadowed=[],
                                inputs="one")
    written = profiles.write_profile(plan, keep=5)
    profile_steps, profile_flushed = protocol(spy, profiles.generations_dir(str(profile_root)), str(profile_root),
                                              profiles.RECORD)

    assert module_steps == EXPECTED
    assert profile_steps == EXPECTED
    # complete: every file and directory of the new generation was flushed before it got its number
    assert module_flushed >= entries_of(result.path), entries_of(result.path) - module_flushed
    generation = os.path.join(profiles.generations_dir(str(profile_root)), str(written.generation))
    assert profile_flushed >= entries_of(generation), entries_of(generation) - profile_flushed

    # A module tree's publish that starts from a pruned generation's directory (the spare) takes it
    # under the staging name first, and then follows the same protocol, flushing all of it
    config = {"root": str(root), "formats": ["lua", "tcl"], "keep": 1}
    for tag in ("b", "c"):
        publish([ModuleEntry(name="app", version="1.0", prefix=str(prefix), artifact_id=tag, subdirs=("bin",))],
                config)
    assert os.path.isdir(root / "generations" / ".spare")
    spy.clear()
    result = publish([entry], config)
    reuse_steps, reuse_flushed = protocol(spy, str(root / "generations"), str(root / "current"), "manifest.json")
    assert reuse_steps == ["reuse the spare"] + EXPECTED
    assert reuse_flushed >= entries_of(result.path), entries_of(result.path) - reuse_flushed


def test_a_builds_directories_reach_the_disk_before_its_manifest(tmp_path, spy):
    store = Store(str(tmp_path / "store"))
    store.init()
    prefix = str(tmp_path / "store" / "app" / "1.0-x")
    for sub in ("bin", "lib/pkgconfig", "share/doc/app"):
        os.makedirs(os.path.join(prefix, sub))
    for rel in ("bin/app", "lib/pkgconfig/app.pc", "share/doc/app/README"):
        with open(os.path.join(prefix, rel), "w") as f:
            f.write(rel)
    os.symlink("app", os.path.join(prefix, "bin", "app-link"))
    store.complete(prefix, {"id": "x"}, None)

    manifest = os.path.join(prefix, ".sitedist", "manifest.json")
    at = next(i for i, e in enumerate(spy) if e[0] == "replace" and e[-1] == manifest)
    flushed_before = {e[1] for e in spy[:at] if e[0] == "fsync"}
    directories = {prefix} | {os.path.join(prefix, d) for d in ("bin", "lib", "lib/pkgconfig", "share", "share/doc",
                                                              "share/doc/app")}
    assert directories <= flushed_before, sorted(directories - flushed_before)
    marker = os.path.join(prefix, ".sitedist", "complete")
    assert [e for e in spy if e[0] == "replace" and e[-1] == marker], "the marker is written last, by rename"


STAGE = ("import os, sys\nsys.path.insert(0, sys.argv[2])\nfrom sitedist.core.generations import Generations\n"
         "number, stage = Generations(sys.argv[1], sys.argv[1] + '/current', 'record.json').stage(reuse=True)\n"
         "print(sorted(os.listdir(stage)))\n")


def test_a_spare_is_reused_only_by_the_user_who_made_it(tmp_path):
    """stage(reuse=True) takes the spare only where this process owns every directory in it and nobody
    else may write there: otherwise (another admin's spare, root facing a user's, a directory others may
    write) it starts from an empty stage and leaves the spare alone. Root is no exception: a tree root
    publishes must not be one another user can change."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as another admin")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+dac_read_search",
              "--ambient-caps=+dac_read_search"]

    def make_spare(gens, owner):
        (gens / ".spare" / "lmod" / "Core").mkdir(parents=True)
        (gens / ".spare" / "lmod" / "Core" / "zlib").symlink_to("../../../content/abc")
        for d in (gens / ".spare", gens / ".spare" / "lmod", gens / ".spare" / "lmod" / "Core"):
            os.chown(d, owner, owner)

    def stage(gens, as_user=()):
        proc = subprocess.run([*as_user, sys.executable, "-c", STAGE, str(gens), repo], capture_output=True,
                              text=True, umask=0o022)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    for owner, who, taker in ((0, "root's", nobody), (65534, "a user's", [])):
        gens = tmp_path / f"generations-{owner}"
        gens.mkdir()
        os.chmod(gens, 0o1777)   # both may stage here (sticky: each may rename only their own entries)
        make_spare(gens, owner)
        assert stage(gens, taker) == "[]", who   # a new, empty stage
        assert os.path.islink(gens / ".spare" / "lmod" / "Core" / "zlib"), who   # the spare untouched
        assert stage(gens, nobody if owner else []) == "['lmod']", who   # its owner takes it
        assert not (gens / ".spare").exists()

    # one's own spare with a directory others may write: not taken either
    gens = tmp_path / "generations-mine"
    gens.mkdir()
    make_spare(gens, 0)
    os.chmod(gens / ".spare" / "lmod", 0o777)
    assert stage(gens) == "[]"
    os.chmod(gens / ".spare" / "lmod", 0o755)
    assert stage(gens) == "['lmod']"
