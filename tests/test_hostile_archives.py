"""Hostile archives, tar (gz, bz2, xz) and zip alike: more rows of the hostile-input table
(tests/test_hostile_input.py), and the same shapes unpacked directly.

The shapes are those of real attacks on extraction: CVE-2025-4517 (a chain of nested directories and
symlinks whose real path passes PATH_MAX, after which Python's own resolution stops following links and a
final link leads out), links whose target leaves through other links, absolute links, hard links out,
members written through a link, devices, FIFOs and setuid files. Every one is refused before anything is
written, with the archive and the member named; nothing lands outside the build directory; the store,
module tree and profiles stay as they were.
"""

import hashlib
import io
import os
import stat
import tarfile
import zipfile

import pytest

from sitedist.core.sources import unpack
from sitedist.errors import SourceError

from conftest import run_cli
from test_hostile_input import archive_recipe, site  # noqa: F401  (the populated site of the table)

FORMATS = ("tar.gz", "tar.bz2", "tar.xz", "zip")


def make_archive(path, members):
    """Write ``members`` [(name, kind, data or link target, mode)] as a tar (compressed by the suffix) or a
    zip. kinds: file, dir, symlink, hardlink, fifo, chr."""
    path = str(path)
    if path.endswith(".zip"):
        fmt = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO,
               "chr": stat.S_IFCHR}
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, kind, data, mode in members:
                if kind == "hardlink":
                    continue  # zip has no hard links
                info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""), (2024, 1, 2, 3, 4, 6))
                info.create_system = 3  # Unix: the high 16 bits of external_attr are the mode
                info.external_attr = (fmt[kind] | mode) << 16 | (0x10 if kind == "dir" else 0)
                z.writestr(info, data.encode() if isinstance(data, str) else (data or b""))
    else:
        kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}
        with tarfile.open(path, "w:" + path.rsplit(".", 1)[1], format=tarfile.PAX_FORMAT) as tar:
            for name, kind, data, mode in members:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = kinds[kind], mode, 1704164646
                if kind in ("symlink", "hardlink"):
                    info.linkname = data
                if kind == "file":
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.addfile(info)
    return path


def f(name, data=b"x", mode=0o644):
    return (name, "file", data, mode)


def d(name, mode=0o755):
    return (name, "dir", None, mode)


def ln(name, target):
    return (name, "symlink", target, 0o777)


def cve_2025_4517(outside, through_member=True):
    """The layout of the CVE-2025-4517 proof of concept: 16 nested directories of 247-character names, each
    with a one-letter symlink to it, so that 'a/b/.../p' names a path longer than PATH_MAX; a link at its
    end back up, a link 'escape' through the chain to ``outside``, and a file written through 'escape'.
    Without ``through_member``: no link at the end of the chain and no file, only 'escape' leading out."""
    comp, steps, members, path = "d" * 247, "abcdefghijklmnop", [], ""
    for step in steps:
        members += [d(os.path.join(path, comp)), ln(os.path.join(path, step), comp)]
        path = os.path.join(path, comp)
    up = "../" * len(steps)
    chain = "/".join(steps)
    if through_member:
        members.append(ln(f"{chain}/{'l' * 254}", up))
        target = f"{chain}/{'l' * 254}/" + "../" * (outside.count("/") + 2) + outside.lstrip("/")
    else:
        target = f"{chain}/" + up + "../" * (outside.count("/") + 2) + outside.lstrip("/")
        return members + [ln("escape", target)], "'escape'"  # no member through it: the link alone is refused
    return members + [ln("escape", target), f("escape/written")], "'a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/"


# Each shape: (members, the refused member or text naming it, text of the reason); ``out`` is a directory
# outside the build directory that nothing may reach.
SHAPES = {
    "cve_2025_4517_chain": lambda out: (*cve_2025_4517(out), "passes through the symlink"),
    "cve_2025_4517_link_only": lambda out: (*cve_2025_4517(out, through_member=False)[:1],
                                            "'escape'", "leads outside the build directory"),
    "member_with_dotdot": lambda out: ([f("pkg/ok"), f("pkg/../../escaped")], "'pkg/../../escaped'",
                                       "has a '..' component"),
    "member_absolute": lambda out: ([f("pkg/ok"), f(f"{out}/abs")], f"'{out}/abs'", "has an absolute path"),
    "symlink_absolute": lambda out: ([ln("pkg/link", out)], "'pkg/link'", "symlink to the absolute path"),
    "symlink_dotdot_out": lambda out: ([ln("pkg/link", "../../.."), f("pkg/ok")], "'pkg/link'",
                                       "leads outside the build directory"),
    "symlink_out_through_links": lambda out: (  # each target looks inside; followed, q/q/.. is above
        [d("pkg"), ln("q", "."), ln("pkg/p", "../q/q/../pkg/../.."), f("pkg/ok")], "'pkg/p'",
        "leads outside the build directory"),
    "symlink_loop": lambda out: ([ln("pkg/a", "b"), ln("pkg/b", "a")], "'pkg/a'", "leads outside"),
    "file_through_symlink_inside": lambda out: ([d("pkg/sub"), ln("pkg/link", "sub"), f("pkg/link/x")],
                                                "'pkg/link/x'", "passes through the symlink 'pkg/link'"),
    "symlink_replacing_directory": lambda out: ([d("pkg/sub"), f("pkg/sub/x"), ln("pkg/sub", "..")],
                                                "'pkg/sub'", "second member of that name"),
    "hardlink_absolute": lambda out: ([("pkg/passwd", "hardlink", "/etc/passwd", 0o644)], "'pkg/passwd'",
                                      "hard link to '/etc/passwd', outside the build directory"),
    "hardlink_dotdot": lambda out: ([f("pkg/ok"), ("pkg/h", "hardlink", "../../etc/passwd", 0o644)], "'pkg/h'",
                                    "outside the build directory"),
    "hardlink_through_symlink": lambda out: ([ln("pkg/l", "."), f("pkg/ok"), ("pkg/h", "hardlink", "pkg/l/ok",
                                                                              0o644)],
                                             "'pkg/h'", "not a file earlier in the archive"),
    "fifo": lambda out: ([("pkg/fifo", "fifo", None, 0o644)], "'pkg/fifo'", "is a device or FIFO"),
    "device": lambda out: ([("pkg/null", "chr", None, 0o666)], "'pkg/null'", "is a device or FIFO"),
    "setuid_file": lambda out: ([f("pkg/su", b"#!/bin/sh\n", 0o4755)], "'pkg/su'", "setuid or setgid bit"),
    "setgid_file": lambda out: ([f("pkg/sg", b"#!/bin/sh\n", 0o2755)], "'pkg/sg'", "setuid or setgid bit"),
}
NOT_FOR_ZIP = {"hardlink_absolute", "hardlink_dotdot", "hardlink_through_symlink"}  # zip has no hard links
CASES = [(shape, fmt) for shape in SHAPES for fmt in FORMATS if not (fmt == "zip" and shape in NOT_FOR_ZIP)]


def files_under(root):
    return sorted(os.path.join(dp, n) for dp, dns, fns in os.walk(root) for n in dns + fns)


@pytest.mark.parametrize("shape, fmt", CASES, ids=[f"{s}[{f}]" for s, f in CASES])
def test_hostile_archive_is_refused_before_writing_anything(tmp_path, shape, fmt):
    out = tmp_path / "outside"
    out.mkdir()
    members, who, why = SHAPES[shape](str(out))
    archive = make_archive(tmp_path / f"evil-1.0.{fmt}", members)
    dest = tmp_path / "build" / "src"
    with pytest.raises(SourceError) as err:
        unpack(archive, str(dest))
    message = str(err.value)
    assert message.startswith(f"evil-1.0.{fmt}: refusing to unpack: member {who}"), message
    assert why in message, message
    assert files_under(out) == [], "something was written outside the build directory"
    assert not dest.exists(), "the archive was partly unpacked"


@pytest.mark.parametrize("fmt", FORMATS)
def test_benign_archive_unpacks_faithfully(tmp_path, fmt):
    """Links inside the tree, hard links, modes and times survive; group and other write do not."""
    members = [d("pkg", 0o775), f("pkg/configure", b"#!/bin/sh\necho hi\n", 0o775), d("pkg/sub"),
               f("pkg/sub/data", b"data", 0o664), ln("pkg/up", "sub/../configure"), ln("pkg/s", "sub"),
               ln("pkg/sub/back", "../configure"), ("pkg/hard", "hardlink", "pkg/sub/data", 0o644),
               f("./pkg/dotted", b"dot")]
    dest = tmp_path / "src"
    unpack(make_archive(tmp_path / f"ok-1.0.{fmt}", members), str(dest))
    pkg = dest / "pkg"
    assert (pkg / "configure").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE(os.stat(pkg / "configure").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(pkg / "sub" / "data").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(pkg).st_mode) == 0o755
    assert os.readlink(pkg / "up") == "sub/../configure" and (pkg / "up").read_bytes().startswith(b"#!")
    assert os.readlink(pkg / "s") == "sub" and (pkg / "s" / "data").read_bytes() == b"data"
    assert (pkg / "sub" / "back").read_bytes().startswith(b"#!")
    assert (pkg / "dotted").read_bytes() == b"dot"
    if fmt != "zip":
        assert os.stat(pkg / "hard").st_ino == os.stat(pkg / "sub" / "data").st_ino
        assert int(os.stat(pkg / "configure").st_mtime) == 1704164646
        assert int(os.stat(pkg).st_mtime) == 1704164646


# --- rows of the hostile-input table: the real CLI, against the populated site --------------------

ROWS = {
    "cve_2025_4517_chain": FORMATS,
    "cve_2025_4517_link_only": ("tar.xz", "zip"),
    "symlink_out_through_links": ("tar.bz2", "zip"),
    "symlink_absolute": ("tar.gz",),
    "hardlink_dotdot": ("tar.xz",),
    "file_through_symlink_inside": ("zip",),
    "member_absolute": ("zip",),
    "fifo": ("tar.bz2",),
    "setuid_file": ("tar.gz", "zip"),
}
TABLE = [(shape, fmt) for shape, fmts in ROWS.items() for fmt in fmts]


@pytest.mark.parametrize("shape, fmt", TABLE, ids=[f"{s}[{f}]" for s, f in TABLE])
def test_hostile_archive_row_is_refused_and_changes_nothing(site, tmp_path, shape, fmt):  # noqa: F811
    out = tmp_path / "outside"
    out.mkdir()
    members, who, why = SHAPES[shape](str(out))
    archive = make_archive(tmp_path / f"evil-1.0.{fmt}", members)
    archive_recipe(tmp_path, archive, hashlib.sha256(open(archive, "rb").read()).hexdigest())
    before = site.digest(build_time=True)
    proc = run_cli("sync", site.config(tmp_path, "alpha: {}, evil: {}", recipes=[tmp_path / "r"]), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"evil-1.0.{fmt}: refusing to unpack: member {who}" in proc.stderr, proc.stderr
    assert why in proc.stderr, proc.stderr
    assert site.digest(build_time=True) == before, "the store, module tree or profiles changed"
    assert files_under(out) == [], "something was written outside the build directory"
