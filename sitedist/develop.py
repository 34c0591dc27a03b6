"""Develop environments: a writable prefix over a profile's current generation, like a Python venv.

``DIR`` gets real, writable directories mirroring the profile (``bin``, ``lib``, ``include``, ``share``...),
each file a symlink to the artifact's file, so a user's ``make install`` (``--prefix=DIR``) adds files
beside the stack's without touching the store (writing through a link into an artifact fails: artifacts
are read-only). ``DIR/activate`` (bash) puts DIR first in the search paths, and ``LD_RUN_PATH`` makes
programs linked in the environment find its libraries by RUNPATH, also after ``deactivate``.
``DIR/.sitedist/develop.json`` records the artifacts it uses; the environment is registered as a GC
root of the store until DIR is removed.
"""

import json
import os
import shlex
import time
from dataclasses import dataclass

from sitedist.core.gcroots import register_tree
from sitedist.errors import ProfileError
from sitedist.profiles import current_generation, read_record

RECORD = os.path.join(".sitedist", "develop.json")
STANDARD_DIRS = ("bin", "lib", "lib/pkgconfig", "include", "share", "share/man")

# variable -> directories of the environment put in front of it (the first ends up first)
SEARCH_PATHS = {
    "PATH": ["bin"],
    "CPATH": ["include"],
    "LIBRARY_PATH": ["lib", "lib64"],
    "LD_RUN_PATH": ["lib", "lib64"],
    "PKG_CONFIG_PATH": ["lib/pkgconfig", "lib64/pkgconfig", "share/pkgconfig"],
    "CMAKE_PREFIX_PATH": [""],
    "ACLOCAL_PATH": ["share/aclocal"],
    "MANPATH": ["share/man"],
}

ACTIVATE = """\
# sitedist develop environment {name_c}, over profile {profile_c} (generation {generation}).
# Use it from bash:   source {dir_c}/activate      Leave it:   deactivate
# Then build your code with --prefix={dir_c} (autotools) or -DCMAKE_INSTALL_PREFIX={dir_c} (CMake).

if [ -n "${{SITEDIST_ENV:-}}" ] && declare -F deactivate >/dev/null; then deactivate; fi

_SITEDIST_VARS="{vars} PS1"

deactivate () {{
    local v set old
    for v in $_SITEDIST_VARS; do
        set="_SITEDIST_SET_$v"; old="_SITEDIST_OLD_$v"
        if [ "${{!set:-}}" = 1 ]; then
            if [ "$v" = PS1 ]; then PS1="${{!old}}"; else export "$v=${{!old}}"; fi
        else
            unset "$v"
        fi
        unset "$set" "$old"
    done
    unset SITEDIST_ENV _SITEDIST_VARS _SITEDIST_PROMPT
    unset -f deactivate _sitedist_prepend
    hash -r
}}

_sitedist_prepend () {{
    if [ -n "${{!1:-}}" ]; then export "$1=$2:${{!1}}"; else export "$1=$2"; fi
}}

for _v in $_SITEDIST_VARS; do
    if [ -n "${{!_v+x}}" ]; then
        printf -v "_SITEDIST_SET_$_v" 1
        printf -v "_SITEDIST_OLD_$_v" %s "${{!_v}}"
    fi
done
unset _v

export SITEDIST_ENV={dir_q}
{prepends}
if [ -z "${{_SITEDIST_SET_MANPATH:-}}" ]; then export MANPATH="$MANPATH:"; fi   # keep the system's manuals
_SITEDIST_PROMPT={name_q}
PS1='(${{_SITEDIST_PROMPT}}) '"${{PS1:-}}"   # the name is expanded when the prompt is shown, never run
hash -r
"""


@dataclass
class DevelopEnv:
    path: str
    profile: str
    generation: int
    artifacts: int
    registered: bool     # a GC root in the store (False: the store is not writable by this user)

    def __str__(self):
        text = (f"develop environment {self.path} over profile {self.profile} (generation {self.generation}, "
                f"{self.artifacts} artifacts)\n  activate it: source {self.path}/activate")
        if not self.registered:
            text += ("\n  note: not registered as a GC root (the store is not yours to write); it stays usable "
                     "while the profile keeps these artifacts")
        return text


def _comment(text):
    """``text`` for a comment line: control characters (a newline ends the comment) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def activate_script(path, name, profile, generation):
    """The bash script that activates the environment ``path``. Names and paths reach the shell only
    quoted (shlex), and comments only on one line, whatever characters a directory name has."""
    prepends = []
    for var, subdirs in SEARCH_PATHS.items():
        for sub in reversed(subdirs):
            prepends.append(f'_sitedist_prepend {var} "$SITEDIST_ENV{"/" + sub if sub else ""}"')
    dir_q = shlex.quote(path)
    return ACTIVATE.format(name_c=_comment(name), profile_c=_comment(profile), generation=generation,
                           dir_c=_comment(dir_q), dir_q=dir_q, name_q=shlex.quote(name),
                           vars=" ".join(SEARCH_PATHS), prepends="\n".join(prepends))


def mirror(generation_dir, dest):
    """Real directories and the generation's links (absolute paths into artifacts) under ``dest``."""
    for dirpath, dirnames, filenames in os.walk(generation_dir):
        rel = os.path.relpath(dirpath, generation_dir)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != ".sitedist"]
        target_dir = dest if rel == "." else os.path.join(dest, rel)
        os.makedirs(target_dir, exist_ok=True)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            src = os.path.join(dirpath, name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), os.path.join(target_dir, name))


def make_env(store, profile_name, profile_root, dest):
    """Create the develop environment ``dest`` over the current generation of the profile at
    ``profile_root``; register it as a GC root of ``store`` when the store is writable."""
    dest = os.path.abspath(dest)
    number = current_generation(profile_root)
    if number is None:
        raise ProfileError(f"profile {profile_name} is not published at {profile_root}; run 'sitedist sync' "
                           "on its config first")
    generation = os.path.realpath(profile_root)
    record = read_record(generation) or {}
    if os.path.lexists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise ProfileError(f"{dest} exists and is not an empty directory; remove it or choose another one")
    mirror(generation, dest)
    for sub in STANDARD_DIRS:
        os.makedirs(os.path.join(dest, sub), exist_ok=True)
    os.makedirs(os.path.join(dest, ".sitedist"), exist_ok=True)
    with open(os.path.join(dest, RECORD), "w", encoding="utf-8") as f:
        json.dump({"profile": profile_name, "profile_root": os.path.abspath(profile_root), "generation": number,
                   "created": time.time(), "prefixes": record.get("prefixes", [])}, f, indent=1)
    with open(os.path.join(dest, "activate"), "w", encoding="utf-8") as f:
        f.write(activate_script(dest, os.path.basename(dest), profile_name, number))
    registered = os.access(store.gcroots_dir if os.path.isdir(store.gcroots_dir) else store.meta, os.W_OK)
    if registered:
        register_tree(store, "develop", dest)
    return DevelopEnv(path=dest, profile=profile_name, generation=number,
                      artifacts=len(record.get("prefixes", [])), registered=registered)


def exists(path):
    """Whether the develop environment ``path`` still exists (the GC keeps its registration)."""
    return os.path.isfile(os.path.join(path, RECORD))


def live_prefixes(path, skip=()):
    """The artifact prefixes the develop environment ``path`` uses: GC roots."""
    try:
        with open(os.path.join(path, RECORD), encoding="utf-8") as f:
            return set(json.load(f)["prefixes"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()
