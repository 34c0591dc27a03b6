"""Lmod's system spider cache for a published module tree (``modules.lmod_cache``).

Refreshed after every publish and rollback that switches the tree; fresh when its timestamp file is newer
than the tree's ``current`` link. Beside it, ``lmodrc.lua`` names the cache for Lmod (``scDescriptT``): a
site points ``LMOD_RC`` at it (admin_docs/modules.md, "The Lmod spider cache").

A refresh costs in proportion to the change. The cache Lmod writes (``spiderT.lua``) holds, for the tree's
directory, one entry per module name (``spiderT[mpath][name]``) and the hidden versions and aliases of each
name's ``.modulerc`` (``mrcT``, ``mrcMpathT``); a name's entries depend only on its directory, which a
content digest names (see sitedist.modules.publish). Beside the cache, ``sitedist-index.json`` records where
each name's entries are in the file and the digest they were made from. A refresh runs Lmod's own ``spider``
on a temporary directory that links only the names whose digest changed, puts the tree's path in its output,
and splices that text into the previous file in place of the changed names' entries; the other entries are
copied as they are. In a hierarchical tree (levels Core, Compiler/<c>/<v>, MPI/<c>/<v>/<mpi>/<v>) each level
is a directory of its own in spiderT and mrcMpathT, keyed by the path the modules that open it prepend to
MODULEPATH; an entry there does not depend on how Lmod reached the level (spider records no parent in it,
and evaluates modulefiles without changing the environment), so spider runs on one temporary directory per
changed level, Core apart (the .modulerc of the MODULEPATH Lmod starts with also go to mrcT). A change to a
module that opens a level (mpathMapT, kept as it is, names them) is not spliced. Anything unexpected (no
index, another Lmod, a module that changes MODULEPATH, a part of the cache that would be new or empty,
output that does not split as expected) runs Lmod's ``update_lmod_system_cache_files`` over the whole tree instead, as before,
and indexes what it wrote for the next refresh.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from sitedist.core.durable import write_atomic
from sitedist.errors import ModulesError
from sitedist.modules.render import lua_string

LMODRC = "lmodrc.lua"
INDEX = "sitedist-index.json"   # where each name's entries are in spiderT.lua (see the module docstring)
CACHE = "spiderT.lua"
MODE = 0o644   # of every file in the cache directory, whatever the umask: every user's Lmod reads them

_LMOD_CACHE_SCRIPT = "update_lmod_system_cache_files"
_LMOD_DIRS = ("/usr/share/lmod/lmod/libexec", "/opt/apps/lmod/lmod/libexec", "/usr/local/lmod/lmod/libexec")
_TREE = "lmod/"      # the Lua tree's names in names.json
_WORK = ".spider-"   # in the cache directory: the changed names' links, while Lmod reads them
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._+/-]+\Z")   # a path Lmod writes unescaped into any Lua string
# Lmod's serialised tables (its serializeTbl): a quoted string, a long string, or the start of a line
# indented by at most 6 spaces (outside strings: the lines that can open or close the parts spliced)
_TOKENS = re.compile(rb'"(?:[^"\\\n]|\\.)*"|\[(=*)\[.*?\]\1\]|\n( {0,6})(?=[^ \n])', re.S)
_KEY = re.compile(rb'(?:\["([^"\n]*)"\]|([A-Za-z_][A-Za-z0-9_]*)) = ')
_LUAC = re.compile(r"spiderT\.luac_([0-9.]+)\Z")   # the compiled cache, named by Lua's version
_SECTIONS = (b"timestampFn", b"mrcT", b"mrcMpathT", b"spiderT", b"mpathMapT")
_CORE = "Core"
_LEVELS = {"Core": 1, "Compiler": 3, "MPI": 5}   # a hierarchical tree's levels: Compiler/gcc/12.2, ...
_OPENER = re.compile(rb'\["([^"\n]*)"\] = "([^"\n]*)",')   # mpathMapT: module -> the directory it is in


@dataclass
class CacheRefresh:
    """What a refresh did: ``spliced`` (only ``spidered`` names were evaluated by Lmod) or a full run
    (``reason`` says why not spliced)."""
    spliced: bool
    spidered: list = field(default_factory=list)   # the module names Lmod evaluated (spliced refreshes)
    reason: str = ""


class _Unsplittable(Exception):
    """The cache cannot be refreshed by splicing; the full refresh runs instead."""


def find_lmod_cache_script():
    candidates = [os.path.join(os.environ["LMOD_DIR"], _LMOD_CACHE_SCRIPT)] if os.environ.get("LMOD_DIR") else []
    candidates += [shutil.which(_LMOD_CACHE_SCRIPT) or ""] + [os.path.join(d, _LMOD_CACHE_SCRIPT) for d in _LMOD_DIRS]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ModulesError(f"modules.lmod_cache is set but Lmod's {_LMOD_CACHE_SCRIPT} was not found; set LMOD_DIR "
                       "to Lmod's libexec directory, or remove modules.lmod_cache")


def _cache_paths(modulepath):
    """The trees Lmod's spider cache covers: the Lua tree, else the Tcl one."""
    return [modulepath.get("lua") or modulepath["tcl"]]


def refresh_lmod_cache(cache_dir, modulepath, names=None):
    """Bring Lmod's system spider cache in ``cache_dir`` up to the published trees (format -> path).
    ``names``: the current generation's names.json (tree path of each module name -> content digest); with
    it, only the names whose digest changed since the last refresh are evaluated. Returns a CacheRefresh."""
    cache_dir = os.path.abspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    script = find_lmod_cache_script()
    paths = _cache_paths(modulepath)
    try:
        if names is None or "lua" not in modulepath:
            raise _Unsplittable("no Lua tree or no names")
        done = _splice(cache_dir, paths[0], script, names)
    except Exception as why:   # anything unexpected: Lmod's own full refresh, as before the splice
        done = CacheRefresh(spliced=False, reason=f"{type(why).__name__}: {why}")
        _full_refresh(cache_dir, paths, script)
        if names is not None and "lua" in modulepath:
            _reindex(cache_dir, paths[0], script, names)
    write_lmodrc(cache_dir)
    return done


def _full_refresh(cache_dir, paths, script):
    _remove(os.path.join(cache_dir, INDEX))   # describes the file about to be replaced
    cmd = [script, "-d", cache_dir, "-t", os.path.join(cache_dir, "timestamp"), ":".join(paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise ModulesError(f"the module tree was published, but refreshing the Lmod spider cache in {cache_dir} "
                           f"failed ({' '.join(cmd)}):\n{tail}\nUntil it is refreshed, 'module avail' shows a "
                           "stale tree: fix the error and publish again, or remove the cache directory")


def lmodrc_text(cache_dir):
    """The ``lmodrc.lua`` that makes Lmod read the system spider cache in ``cache_dir``."""
    return ("-- Lmod's system spider cache of a sitedist module tree: name this file in LMOD_RC.\n"
            f"scDescriptT = {{\n  {{ dir = {lua_string(cache_dir)}, "
            f"timestamp = {lua_string(os.path.join(cache_dir, 'timestamp'))} }},\n}}\n")


def write_lmodrc(cache_dir):
    """Write ``cache_dir/lmodrc.lua`` unless it already says the same (a reader never sees half a file)."""
    path, text = os.path.join(cache_dir, LMODRC), lmodrc_text(cache_dir)
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    write_atomic(path, text, mode=MODE)


def cache_stale(current, cache_dir):
    """Whether the cache in ``cache_dir`` is older than the tree's ``current`` link, or has no
    ``lmodrc.lua`` (a cache written before sitedist wrote one)."""
    try:
        stamp = os.stat(os.path.join(cache_dir, "timestamp")).st_mtime
        os.stat(os.path.join(cache_dir, LMODRC))
    except FileNotFoundError:
        return True
    return stamp <= os.lstat(current).st_mtime   # equal: a coarse clock, refresh


def _lmod_identity(script):
    """What the text of Lmod's cache depends on besides the tree: Lmod's files and its configuration."""
    libexec = os.path.dirname(os.path.realpath(script))
    parts = []
    for path in (script, os.path.join(libexec, "spider"), os.path.join(libexec, "Version.lua"),
                 os.environ.get("LMOD_RC", ""), os.environ.get("LMOD_PACKAGE_PATH", "")):
        try:
            st = os.stat(path)
            parts.append((path, st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append((path, None))
    parts.append(sorted((k, v) for k, v in os.environ.items() if k.startswith("LMOD_")))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _tree_names(names):
    return {path[len(_TREE):]: digest for path, digest in names.items() if path.startswith(_TREE)}


def _reindex(cache_dir, mpath, script, names):
    """Index the cache that Lmod's full refresh just wrote; without an index the next refresh is full too."""
    try:
        path = os.path.join(cache_dir, CACHE)
        with open(path, "rb") as f:
            data = f.read()
        tree = _tree_names(names)
        _, levels = _layout(mpath)
        items, openers = _parse(data, _mpaths(mpath, levels, tree), set(tree), mrc=f"{_CORE}/" if levels else "")
        luac = sorted(m.group(1) for m in map(_LUAC.match, os.listdir(cache_dir)) if m)
        _write_index(cache_dir, path, mpath, script, tree, items, luac, openers)
    except Exception:   # the next refresh is a full one
        _remove(os.path.join(cache_dir, INDEX))


def _write_index(cache_dir, path, mpath, script, tree, items, luac, openers):
    st = os.stat(path)
    index = {"identity": _lmod_identity(script), "mpath": mpath, "file": [st.st_size, st.st_mtime_ns, st.st_ino],
             "luac": luac, "names": tree, "openers": openers, "items": items}
    write_atomic(os.path.join(cache_dir, INDEX), json.dumps(index, separators=(",", ":")), mode=MODE)


def _splice(cache_dir, mpath, script, names):
    """Refresh the cache by re-running Lmod on the changed names only; raise _Unsplittable where it cannot."""
    if not _PLAIN_PATH.match(mpath):
        raise _Unsplittable(f"{mpath} has characters Lmod would escape")
    live, levels = _layout(mpath)
    try:
        with open(os.path.join(cache_dir, INDEX), "rb") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise _Unsplittable("no index") from None
    path = os.path.join(cache_dir, CACHE)
    st = os.stat(path)
    if index.get("identity") != _lmod_identity(script) or index.get("mpath") != mpath:
        raise _Unsplittable("another Lmod, Lmod configuration or tree")
    if index.get("file") != [st.st_size, st.st_mtime_ns, st.st_ino]:
        raise _Unsplittable(f"{path} is not the file indexed")
    luacs = [(ver, shutil.which(f"luac{ver}")) for ver in index["luac"]]
    if not all(exe for _, exe in luacs):
        raise _Unsplittable("luac not found")
    old_tree, tree = index["names"], _tree_names(names)
    changed = sorted(n for n, d in tree.items() if old_tree.get(n) != d)
    removed = set(old_tree) - set(tree)
    opening = sorted(set(index.get("openers", ())) & (set(changed) | removed))
    if opening:   # the levels below it, and mpathMapT, change with it
        raise _Unsplittable(f"{', '.join(opening)} changes MODULEPATH")
    stamp = os.path.join(cache_dir, "timestamp")
    if not changed and not removed:   # the same tree (a rollback to it, a stale timestamp): only newer
        _touch(stamp + ".new")
        for f in [path] + [f"{path[:-4]}.luac_{ver}" for ver, _ in luacs]:
            os.utime(f)
        os.replace(stamp + ".new", stamp)
        return CacheRefresh(spliced=True)
    spidered, runs = _spider_names(cache_dir, mpath, levels, script, live, tree, changed)
    text, new = b"", []
    for out, mrc, run in runs:   # one text of the runs' outputs, each run's entries where they are in it
        items, _ = _parse(out, _mpaths(mpath, levels, run), run, opens=False, mrc=mrc)
        new += [["slot", item[1], [[k, o, s + len(text), e + len(text)] for k, o, s, e in item[2]]]
                for item in items if item[0] == "slot"]
        text += out
    if len({item[1] for item in new}) != len(new):
        raise _Unsplittable("the runs of spider wrote the same part of the cache")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) != st.st_size:
        raise _Unsplittable(f"{path} changed while read")
    out, items = _join(index["items"], data, new, text, spidered | removed)
    _touch(stamp + ".new")   # older than the cache files: Lmod trusts a cache newer than its timestamp
    write_atomic(path, out, mode=MODE)
    for ver, exe in luacs:   # compiled from the file in place, as update_lmod_system_cache_files does
        compiled = f"{path[:-4]}.luac_{ver}"
        proc = subprocess.run([exe, "-o", f"{compiled}.tmp{os.getpid()}", path], capture_output=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            _remove(f"{compiled}.tmp{os.getpid()}")
            raise _Unsplittable(f"{exe} failed: {proc.stderr.decode(errors='replace')[-300:]}")
        os.chmod(f"{compiled}.tmp{os.getpid()}", MODE)
        os.replace(f"{compiled}.tmp{os.getpid()}", compiled)
    os.replace(stamp + ".new", stamp)
    _write_index(cache_dir, path, mpath, script, tree, items, index["luac"], index.get("openers", []))
    return CacheRefresh(spliced=True, spidered=sorted(spidered))


def _layout(mpath):
    """(the live directory the tree's names are under, whether the tree is hierarchical): a flat tree is
    ``<root>/lmod``, a hierarchical one ``<root>/lmod/Core`` with the other levels beside Core."""
    live = os.path.realpath(mpath)
    if os.path.basename(live) == _TREE[:-1]:
        return live, False
    if os.path.basename(mpath) == _CORE and os.path.basename(live) == _CORE \
            and os.path.basename(os.path.dirname(live)) == _TREE[:-1]:
        return os.path.dirname(live), True
    raise _Unsplittable("neither a flat nor a hierarchical tree")


def _level(name):
    """The level of a hierarchical tree's name 'Compiler/gcc/12.2/zlib': 'Compiler/gcc/12.2'."""
    parts = name.split("/")
    depth = _LEVELS.get(parts[0])
    if depth is None or len(parts) <= depth:
        raise _Unsplittable(f"{name} is in no level of the hierarchy")
    return "/".join(parts[:depth])


def _mpaths(mpath, levels, names):
    """The MODULEPATH entries that hold the ``names``, each with the prefix of its names in names.json."""
    if not levels:
        return {mpath: ""}
    root = os.path.dirname(mpath)
    return {f"{root}/{level}": f"{level}/" for level in {_level(n) for n in names}}


def _spider_names(cache_dir, mpath, levels, script, live, tree, changed):
    """Run Lmod's spider on a directory linking the ``changed`` names of the tree at ``live`` (in a
    hierarchical tree, on one directory per level, each given to spider as a MODULEPATH entry of its own,
    as the modules that open the level do); return the names it covers and, for each run of spider, (its
    output with the tree's paths in place of the directory's, the prefix of the names its mrcT belongs to
    or None, the names it covers)."""
    top = set(changed)
    linked = [n for n in changed if not any(a in top for a in _ancestors(n))]   # a name holds its kids
    spidered = {n for n in tree if n in top or any(a in linked for a in _ancestors(n))}
    for leftover in (n for n in os.listdir(cache_dir) if n.startswith(_WORK)):   # of a refresh killed midway
        shutil.rmtree(os.path.join(cache_dir, leftover), ignore_errors=True)
    work = tempfile.mkdtemp(prefix=_WORK, dir=cache_dir)
    try:
        base = os.path.dirname(mpath) if levels else mpath   # what the directory stands for
        if not _PLAIN_PATH.match(work) or work in base:
            raise _Unsplittable(f"{work} has characters Lmod would escape")
        for name in linked:
            target = os.path.realpath(os.path.join(live, name))
            if os.path.basename(target) != tree[name]:   # names.json is not the live tree
                raise _Unsplittable(f"{name} is not {tree[name]} in {live}")
            link = os.path.join(work, name)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(target, link)
        spider = os.path.join(os.path.dirname(os.path.realpath(script)), "spider")
        if levels:   # Core, on the MODULEPATH users start with (its .modulerc go to mrcT too), apart
            core = {n for n in spidered if _level(n) == _CORE}
            groups = [(core, f"{_CORE}/"), (spidered - core, None)]
        else:
            groups = [(spidered, "")]
        runs = []
        for run, mrc in groups:
            if not run:
                continue
            dirs = sorted({os.path.join(work, _level(n)) for n in run}) if levels else [work]
            proc = subprocess.run([spider, "-o", "spiderT", *dirs], capture_output=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise _Unsplittable(f"spider failed: {proc.stderr.decode(errors='replace')[-300:]}")
            runs.append((proc.stdout.replace(work.encode(), base.encode()), mrc, run))
        return spidered, runs
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ancestors(name):
    while "/" in name:
        name = name.rpartition("/")[0]
        yield name


def _lines(data):
    """(position, indent) of each line of ``data`` indented by at most 6 spaces, outside strings."""
    first = len(data) - len(data.lstrip(b" "))
    out = [(0, first)] if first <= 6 else []
    out += [(m.start() + 1, len(m.group(2))) for m in _TOKENS.finditer(data) if m.group(2) is not None]
    return out


def _parse(data, mpaths, owners, opens=True, mrc=""):
    """Split Lmod's cache text into gaps (kept as they are) and slots of entries, each entry owned by one
    of the module names ``owners`` (names.json's, less the tree's prefix: in the MODULEPATH entry
    ``mpath``, ``mpaths[mpath]`` + the name Lmod knows). Returns (the items: ["gap", start, end] or
    ["slot", name, [[key, owner, start, end], ...]], the names of the modules that change MODULEPATH);
    raises _Unsplittable for anything but the expected shape, and for modules that change MODULEPATH
    unless ``opens`` (mpathMapT, which records them, is kept as it is: they are not spliced). ``mrc``: the
    prefix of the names that mrcT's entries (the .modulerc of the MODULEPATH Lmod starts with) belong to,
    None to leave them out (spider's output for levels users reach by loading a module)."""
    lines = _lines(data)
    quoted = {b'["' + mp.encode() + b'"] = {': prefix for mp, prefix in mpaths.items()}
    mp, prefix = next(iter(mpaths.items()))
    root = mp[:-len(prefix)] if prefix else None   # of a hierarchical tree's levels: mpath is root + level
    empty = re.compile(rb'\["' + re.escape(root.encode()) + rb'/[^"\n]*"\] = \{\},\Z' if root else rb"(?!)")
    items, cut, i = [], 0, 0
    openers = set()

    def line(k):
        pos, ind = lines[k]
        end = data.find(b"\n", pos)
        return data[pos + ind:end if end >= 0 else len(data)]

    def slot(name, k, indent, prefix=""):
        """The entries at ``indent`` after opener line k, up to its closer; returns the closer's index."""
        nonlocal cut
        entries, k = [], k + 1
        while k < len(lines) and lines[k][1] >= indent:
            if lines[k][1] == indent and not line(k).startswith(b"}"):   # an entry (or its end)
                m = _KEY.match(line(k))
                if not m:
                    raise _Unsplittable(f"unexpected line in {name}: {line(k)[:80]!r}")
                key = (m.group(1) if m.group(1) is not None else m.group(2)).decode()
                owner = _owner(name, key, owners, prefix) if prefix is not None else None
                entries.append([key, owner, lines[k][0]])
            k += 1
        if k == len(lines) or lines[k][1] != indent - 2 or not line(k).startswith(b"}"):
            raise _Unsplittable(f"{name} does not close")
        if not entries:
            raise _Unsplittable(f"{name} is empty")
        ends = [e[2] for e in entries[1:]] + [lines[k][0]]
        for e, end in zip(entries, ends):
            e.append(end)
        if [e[0].encode() for e in entries] != sorted(e[0].encode() for e in entries):
            raise _Unsplittable(f"{name} is not in the order expected")
        items.append(["gap", cut, entries[0][2]])
        items.append(["slot", name, entries])
        cut = lines[k][0]
        return k

    while i < len(lines):
        pos, ind = lines[i]
        head = line(i)
        section = head.partition(b" = ")[0]
        if ind == 0 and head == b"}":   # the end of the section before
            i += 1
            continue
        if ind != 0 or section not in _SECTIONS:
            raise _Unsplittable(f"unexpected section {head[:80]!r}")
        i += 1
        if section in (b"timestampFn",):
            while i < len(lines) and lines[i][1] > 0:
                i += 1
        elif section == b"mpathMapT" and head != b"mpathMapT = {}":
            if not opens:
                raise _Unsplittable("modules that change MODULEPATH")
            while i < len(lines) and lines[i][1] > 0:
                m = _OPENER.match(line(i))
                if lines[i][1] == 4 and m:
                    prefix = quoted.get(b'["' + m.group(2) + b'"] = {')
                    if prefix is None:
                        raise _Unsplittable(f"a module in {m.group(2).decode()!r}, not the tree, changes MODULEPATH")
                    openers.add(_owner("mpathMapT", m.group(1).decode(), owners, prefix))
                elif lines[i][1] != 2 or not (line(i).endswith(b" = {") or line(i) == b"},"):
                    raise _Unsplittable("unexpected mpathMapT")
                i += 1
        elif section == b"mrcT":
            while i < len(lines) and lines[i][1] > 0:
                if lines[i][1] == 2 and line(i).endswith(b" = {"):
                    i = slot(f"mrcT/{line(i).partition(b' = ')[0].decode()}", i, 4, mrc)
                elif lines[i][1] != 2:
                    raise _Unsplittable("unexpected mrcT")
                i += 1
        else:   # mrcMpathT, spiderT: the tree's directory
            while i < len(lines) and lines[i][1] > 0:
                text = line(i)
                if lines[i][1] == 2 and text in quoted:
                    prefix = quoted[text]
                    at = f"@{prefix}" if prefix else ""   # the slots of the tree's levels
                    if section == b"spiderT":
                        i = slot(f"spiderT{at}", i, 4, prefix)
                    else:
                        i += 1
                        while lines[i][1] == 4 and not line(i).startswith(b"}"):
                            sub = line(i)
                            if sub.endswith(b" = {"):
                                i = slot(f"mrcMpathT{at}/{sub.partition(b' = ')[0].decode()}", i, 6, prefix)
                            elif not sub.endswith(b" = {},"):
                                raise _Unsplittable("unexpected mrcMpathT")
                            i += 1
                        if lines[i][1] != 2 or not line(i).startswith(b"}"):
                            raise _Unsplittable("unexpected mrcMpathT")
                elif lines[i][1] == 2 and section == b"spiderT" and _KEY.match(text) and not text.startswith(b"["):
                    pass   # version = 5
                elif lines[i][1] == 2 and section == b"spiderT" and opens and empty.match(text):
                    pass   # a level of the tree that a module opens and that holds no modules (yet): kept
                else:
                    raise _Unsplittable(f"unexpected line in {section.decode()}: {text[:80]!r}")
                i += 1
    items.append(["gap", cut, len(data)])
    if mrc is None:   # mrcT of directories that are not on the MODULEPATH users start with: not the cache's
        items = [item for item in items if not (item[0] == "slot" and item[1].startswith("mrcT/"))]
    return items, sorted(openers)


def _owner(slot, key, owners, prefix=""):
    """The module name an entry belongs to: its key (spiderT), or the name its key starts with; in a
    hierarchical tree, with the prefix of its level ('Compiler/gcc/12.2/' + 'zlib')."""
    if slot.startswith("spiderT"):
        name = prefix + key
    else:
        name = next((prefix + a for a in _ancestors(key) if prefix + a in owners), None)
    if name not in owners:
        raise _Unsplittable(f"{slot} entry {key!r} belongs to no module name evaluated")
    return name


def _join(old_items, data, new_items, text, drop):
    """The new cache: the old file's gaps and entries, less those of the names ``drop``, with the entries of
    the spider output ``text`` (``new_items``) put in, in Lmod's order. Returns (bytes, its items)."""
    fresh = {item[1]: item[2] for item in new_items if item[0] == "slot"}
    out, items, at = [], [], 0
    for item in old_items:
        if item[0] == "gap":
            piece = data[item[1]:item[2]]
            out.append(piece)
            items.append(["gap", at, at + len(piece)])
            at += len(piece)
            continue
        name = item[1]
        entries = [(key, owner, data[s:e]) for key, owner, s, e in item[2] if owner not in drop]
        entries += [(key, owner, text[s:e]) for key, owner, s, e in fresh.pop(name, ())]
        entries.sort(key=lambda entry: entry[0].encode())
        if not entries or any(a[0] == b[0] for a, b in zip(entries, entries[1:])):
            raise _Unsplittable(f"{name} would be empty or hold a key twice")
        placed = []
        for key, owner, piece in entries:
            out.append(piece)
            placed.append([key, owner, at, at + len(piece)])
            at += len(piece)
        items.append(["slot", name, placed])
    if fresh:
        raise _Unsplittable(f"new parts of the cache: {', '.join(sorted(fresh))}")
    return b"".join(out), items


def _touch(path):
    _remove(path)
    with open(path, "wb"):
        pass
    os.chmod(path, MODE)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
