"""Lmod's system spider cache for a published module tree (``modules.lmod_cache``).

Refreshed after every publish and rollback that switches the tree; fresh when its timestamp file is newer
than the tree's ``current`` link. Beside it, ``lmodrc.lua`` names the cache for Lmod (``scDescriptT``): a
site points ``LMOD_RC`` at it (admin_docs/modules.md, "The Lmod spider cache").
"""

import os
import shutil
import subprocess

from sitedist.errors import ModulesError
from sitedist.modules.render import lua_string

LMODRC = "lmodrc.lua"

_LMOD_CACHE_SCRIPT = "update_lmod_system_cache_files"
_LMOD_DIRS = ("/usr/share/lmod/lmod/libexec", "/opt/apps/lmod/lmod/libexec", "/usr/local/lmod/lmod/libexec")


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


def refresh_lmod_cache(cache_dir, modulepath):
    """Rebuild Lmod's system spider cache in ``cache_dir`` for the published trees (format -> path)."""
    cache_dir = os.path.abspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    cmd = [find_lmod_cache_script(), "-d", cache_dir, "-t", os.path.join(cache_dir, "timestamp"),
           ":".join(_cache_paths(modulepath))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise ModulesError(f"the module tree was published, but refreshing the Lmod spider cache in {cache_dir} "
                           f"failed ({' '.join(cmd)}):\n{tail}\nUntil it is refreshed, 'module avail' shows a "
                           "stale tree: fix the error and publish again, or remove the cache directory")
    write_lmodrc(cache_dir)


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
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)   # every user's Lmod reads it
    os.replace(tmp, path)


def cache_stale(current, cache_dir):
    """Whether the cache in ``cache_dir`` is older than the tree's ``current`` link, or has no
    ``lmodrc.lua`` (a cache written before sitedist wrote one)."""
    try:
        stamp = os.stat(os.path.join(cache_dir, "timestamp")).st_mtime
        os.stat(os.path.join(cache_dir, LMODRC))
    except FileNotFoundError:
        return True
    return stamp <= os.lstat(current).st_mtime   # equal: a coarse clock, refresh
