"""Find and rewrite the store paths an artifact holds, so that it works under another store path.

Kinds of places (what a manifest's ``relocate`` lists per file):
  ``symlink``  an absolute symlink into an old prefix
  ``rpath``    an ELF file's RPATH/RUNPATH (rewritten with patchelf: any length)
  ``text``     a file without NUL bytes (pkg-config, libtool .la, CMake configs, scripts, shebangs):
               every occurrence replaced, any length
  ``binary``   any other file holding a path: each NUL-terminated string holding it is rewritten in
               place and padded with NULs, which works only when the new path is not longer than the
               old (build in a store with ``padded_length`` to make room; admin_docs/caches.md)

``mapping`` is a list of (old, new) byte strings; longer olds are matched first, and each byte of a
file is rewritten at most once (a new path that contains an old one is not rewritten again).
"""

import os
import re
import stat
import subprocess

from sitedist.core.store import PADDING
from sitedist.errors import RelocationError

SCAN_CHUNK = 1 << 24


def patchelf():
    from sitedist.build.builder import _patchelf  # the one place that finds patchelf

    return _patchelf()


def is_elf(data):
    return data[:4] == b"\x7fELF"


def _pattern(olds):
    return re.compile(b"|".join(re.escape(o) for o in sorted(set(olds), key=len, reverse=True)))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def scan(prefix, olds):
    """{relative path: [kinds]} of every file under ``prefix`` (outside .sitedist/) that holds one of
    the byte strings ``olds`` (the store paths it was built with)."""
    from sitedist.core.store import iter_files

    pattern = _pattern(list(olds) + stale_prefixes(olds))
    text_olds = [o.decode("utf-8", "surrogateescape") for o in olds]
    found = {}
    for rel, path, st in iter_files(prefix):
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if target.startswith("/") and any(target == o.rstrip("/") or target.startswith(o) for o in text_olds):
                found[rel] = ["symlink"]
            continue
        data = _read(path)
        if not pattern.search(data):
            continue
        if is_elf(data):
            kinds = ["binary"]
            rpath = _rpath(path)
            if rpath is not None and pattern.search(rpath.encode("utf-8", "surrogateescape")):
                kinds.insert(0, "rpath")
            found[rel] = kinds
        else:
            found[rel] = ["binary"] if b"\0" in data else ["text"]
    return found


def _rpath(path):
    proc = subprocess.run([patchelf(), "--print-rpath", path], capture_output=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


def _sub(pattern, mapping, data):
    return pattern.sub(lambda m: mapping[m.group(0)], data)


def stale_prefixes(olds):
    """For padded old roots: the start of the padding (``<root>/__sitedist_padding__``). A string that
    holds it but not the whole old root is a truncated copy (linkers and patchelf leave such remnants in
    unused bytes); relocation clears those strings."""
    out = []
    for old in olds:
        i = old.find(b"/" + PADDING.encode())
        if i >= 0:
            out.append(old[:i + 1 + len(PADDING)])
    return out


def rewrite_binary(data, pattern, mapping, where, stale=None):
    """``data`` with every NUL-terminated string holding an old path rewritten in place; the length
    of ``data`` never changes. RelocationError when a new string would be longer than the old.
    Strings still holding a ``stale`` pattern afterwards (a truncated padded path) are cleared."""
    out = bytearray(data)
    pos = 0
    while True:
        m = pattern.search(data, pos)
        if not m:
            break
        start = m.start()
        end = data.find(b"\0", start)
        if end < 0:
            end = len(data)
        old = data[start:end]
        new = _sub(pattern, mapping, old)
        if len(new) > len(old):
            raise RelocationError(where(len(new) - len(old)))
        out[start:end] = new + b"\0" * (len(old) - len(new))
        pos = end
    if stale is not None:
        pos = 0
        while True:
            m = stale.search(out, pos)
            if not m:
                break
            end = out.find(b"\0", m.start())
            end = len(out) if end < 0 else end
            out[m.start():end] = b"\0" * (end - m.start())
            pos = end
    return bytes(out)


def relocate(prefix, places, mapping, what):
    """Rewrite the ``places`` ({rel: [kinds]}) of an unpacked artifact at ``prefix``. ``what`` names the
    artifact in errors. Afterwards checks that no file holds an old path any more (unless the new path
    contains the old one, where that cannot be told apart)."""
    stale = stale_prefixes([o for o, _ in mapping])
    pairs, mapping = mapping, {}
    for old, new in pairs:
        mapping.setdefault(old, new)  # the first pair of an old path wins (own prefix, dependencies, roots)
    if all(o == n for o, n in mapping.items()):
        return
    # Pairs that stay the same (a dependency used in place from an upstream store) stay in the pattern,
    # so that a broader pair (an old store root) never rewrites them.
    pattern = _pattern(mapping)
    stale = _pattern(stale) if stale and not any(s in n for s in stale for n in mapping.values()) else None
    for rel, kinds in sorted(places.items()):
        path = os.path.join(prefix, rel)
        if "symlink" in kinds:
            target = os.readlink(path).encode("utf-8", "surrogateescape")
            new = _sub(pattern, mapping, target).decode("utf-8", "surrogateescape")
            os.unlink(path)
            os.symlink(new, path)
            continue
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise RelocationError(f"{what}: {rel} should be a file to relocate, but is not")
        os.chmod(path, stat.S_IMODE(st.st_mode) | 0o200)
        if "rpath" in kinds:
            old = _rpath(path)
            if old is not None:
                new = _sub(pattern, mapping, old.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")
                proc = subprocess.run([patchelf(), "--set-rpath", new, path], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RelocationError(f"{what}: patchelf cannot set the RUNPATH of {rel}: {proc.stderr.strip()}")
        data = _read(path)
        if "text" in kinds:
            new = _sub(pattern, mapping, data)
        else:
            def where(extra, rel=rel):
                return (f"{what}: {rel} holds a store path in a binary string, and this store's path is "
                        f"{extra} bytes longer than the one it was built in, so it cannot be rewritten in "
                        f"place. Build in a store with a longer path (store: {{root: ..., padded_length: "
                        f"N}}, admin_docs/caches.md) to make artifacts relocatable to longer paths")
            new = rewrite_binary(data, pattern, mapping, where, stale)
        if new != data:
            with open(path, "r+b") as f:
                f.write(new)
                f.truncate()
        os.chmod(path, stat.S_IMODE(st.st_mode))


def check_clean(prefix, olds, news, what):
    """RelocationError when a file under ``prefix`` still holds one of ``olds`` (skipping olds that are
    part of a new path: those cannot be told apart)."""
    from sitedist.core.store import iter_files

    olds = [o for o in list(olds) + stale_prefixes(olds) if not any(o in n for n in news)]
    if not olds:
        return
    pattern = _pattern(olds)
    for rel, path, st in iter_files(prefix):
        if stat.S_ISLNK(st.st_mode):
            held = pattern.search(os.readlink(path).encode("utf-8", "surrogateescape"))
        else:
            held = pattern.search(_read(path))
        if held:
            raise RelocationError(f"{what}: {rel} still holds the old store path {held.group(0).decode(errors='replace')} "
                                  f"after relocation (in a place sitedist cannot rewrite); it will be built instead")
