"""Publishing module trees atomically, in generations.

Layout of ``modules.root``::

    generations/<N>/manifest.json   what generation N is: its inputs' digest and the artifact prefixes it
                                    references (each generation is a GC root)
    generations/<N>/files.json      each file's content key, for reuse by the next generation
    generations/<N>/lmod/, tcl/     the trees
    current -> generations/<N>      switched by one rename: users see the old tree or the new one
    lmod -> current/lmod            stable: what users put in MODULEPATH (hierarchical: lmod/Core)
    tcl -> current/tcl

A generation is written under ``generations/.staging-<N>-<pid>`` (its manifest first, so that a GC running
meanwhile keeps its prefixes), flushed to disk, renamed to ``generations/<N>`` and then switched to: the
protocol of ``sitedist.core.generations.Generations``, the same as profiles'. Files whose content key
equals the current generation's are hard-linked from it instead of rendered. Publishing inputs equal to
the current generation's writes nothing.
"""

import hashlib
import json
import os
import posixpath
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sitedist.core.generations import Generations, point
from sitedist.errors import ModulesError
from sitedist.modules import catalog
from sitedist.modules.lmod_cache import cache_stale, refresh_lmod_cache
from sitedist.modules.plan import plan_tree
from sitedist.modules.render import FORMATS, Renderer, module_context

GENERATIONS = "generations"
CURRENT = "current"
MANIFEST = "manifest.json"
FILES = "files.json"
_CONFIG_KEYS = ("formats", "layout", "naming", "disambiguate", "defaults", "hide_implicit", "header", "footer",
                "catalog", "target")


@dataclass
class PublishResult:
    generation: int          # the current generation after publishing
    root: str
    path: str                # the generation's directory
    changed: bool            # False: the inputs were the current generation's; nothing was written
    rendered: int = 0        # files rendered
    reused: int = 0          # files hard-linked (or copied) from the previous generation
    modules: int = 0         # modules in the tree (each in every format)
    notes: list = field(default_factory=list)   # name clashes resolved by modules.disambiguate
    modulepath: dict = field(default_factory=dict)   # format -> the stable MODULEPATH entry
    pruned: list = field(default_factory=list)  # generation numbers removed


@dataclass
class Generation:
    number: int
    path: str
    created: float
    current: bool
    modules: int
    inputs: str              # digest of what it was generated from


def modulepath_roots(config):
    """format -> the directory users put in MODULEPATH; the same for every generation."""
    root = os.path.abspath(config["root"])
    sub = "/Core" if config.get("layout", "flat") == "hierarchical" else ""
    return {fmt: f"{root}/{FORMATS[fmt][0]}{sub}" for fmt in config.get("formats", ["lua", "tcl"])}


def modulepath_lines(config):
    """The lines for a site's shell start-up files, one per format (a site uses the one of its tool)."""
    tools = {"lua": "Lmod", "tcl": "Environment Modules (or Lmod reading Tcl modulefiles)"}
    return [f"module use {path}  # {tools[fmt]}" for fmt, path in modulepath_roots(config).items()]


def inputs_digest(entries, config, template_digest):
    """Digest of everything a tree is generated from (including this package's code)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    conf = {k: config.get(k) for k in _CONFIG_KEYS}
    conf["defaults"] = sorted((conf["defaults"] or {}).items())
    h.update(repr((os.path.abspath(config["root"]), sorted(conf.items()), template_digest)).encode())
    for e in sorted(set(entries), key=lambda e: (e.artifact_id, e.name, e.version, e.kind)):
        h.update(repr(e).encode())
    return h.hexdigest()


def publish(entries, config, lock=nullcontext()):
    """Generate the module tree for ``entries`` and switch users to it; see the module docstring.

    Raises ModulesError (before writing anything) on name clashes and other planning errors."""
    root = os.path.abspath(config["root"])
    formats = list(config.get("formats", ["lua", "tcl"]))
    renderer = Renderer(config.get("templates"))
    digest = inputs_digest(entries, config, renderer.digest)
    generations = _generations(root)
    gens = generations.directory
    with lock:
        if not os.path.isdir(gens):
            os.makedirs(gens)
            os.chmod(gens, 0o755)   # users must read the tree whatever the publisher's umask
        generations.remove_leftovers()
        current = generations.current()
        old = _read_json(os.path.join(gens, str(current), MANIFEST)) if current else None
        if old and old.get("inputs") == digest:
            _ensure_links(root, formats)
            if config.get("lmod_cache") and cache_stale(os.path.join(root, CURRENT), config["lmod_cache"]):
                refresh_lmod_cache(config["lmod_cache"], old["modulepath"])
            return PublishResult(generation=current, root=root, path=os.path.join(gens, str(current)),
                                 changed=False, modules=old.get("modules", 0), notes=old.get("notes", []),
                                 modulepath=modulepath_roots(config))
        plan = plan_tree(entries, config)
        number, stage = generations.stage()
        manifest = {
            "generation": number, "created": time.time(), "inputs": digest, "layout": plan.layout,
            "formats": formats, "modules": len(plan.modules), "lmod_cache": config.get("lmod_cache"),
            "modulepath": modulepath_roots(config), "notes": plan.notes,
            "prefixes": sorted(plan.prefixes()),
        }
        generations.write_record(stage, manifest)   # a GC root from now on
        previous = os.path.join(gens, str(current)) if current else None
        old_files = (_read_json(os.path.join(previous, FILES)) or {}) if previous else {}
        try:
            files, rendered, reused = _write_tree(plan, config, renderer, root, stage, previous, old_files)
            if catalog.enabled(config):   # the catalog page switches and rolls back with its tree
                catalog.write_catalog(plan, config, os.path.join(stage, catalog.CATALOG), renderer, number)
            _write_json(os.path.join(stage, FILES), files)
            final = generations.commit(stage, number)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _switch(root, number)
        _ensure_links(root, formats)
        pruned = _prune(gens, number, int(config.get("keep", 5)))
        if config.get("lmod_cache"):
            refresh_lmod_cache(config["lmod_cache"], manifest["modulepath"])
    return PublishResult(generation=number, root=root, path=final, changed=True, rendered=rendered,
                         reused=reused, modules=len(plan.modules), notes=plan.notes,
                         modulepath=manifest["modulepath"], pruned=pruned)


def _write_tree(plan, config, renderer, root, stage, previous, old_files):
    header = (config.get("header") or "").splitlines()
    footer = (config.get("footer") or "").splitlines()
    jobs = []
    for fmt in config.get("formats", ["lua", "tcl"]):
        tree, ext, rc_name = FORMATS[fmt]
        tree_root = f"{root}/{tree}"
        template = f"modulefile.{fmt}.j2"
        for level in plan.levels:
            os.makedirs(os.path.join(stage, tree, level), exist_ok=True)
        for m in plan.modules:
            jobs.append((f"{tree}/{m.relpath}{ext}", template, module_context(m, tree_root, header, footer)))
        for (level, name), (default, hidden) in plan.rc_dirs().items():
            ctx = {"name": name, "default": default or "", "hidden": tuple(hidden)}
            jobs.append((posixpath.join(tree, level, name, rc_name), f"modulerc.{fmt}.j2", ctx))
    fix_mode = _umask() & 0o055
    made = set()
    files = {}
    rendered = reused = 0
    for rel, template, ctx in jobs:
        key = files[rel] = renderer.key(template, ctx)
        path = os.path.join(stage, rel)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if old_files.get(rel) == key and _reuse(os.path.join(previous, rel), path):
            reused += 1
            continue
        with open(path, "w", encoding="utf-8") as f:
            f.write(renderer.render(template, ctx))
        rendered += 1
    if fix_mode:   # users must read the tree whatever the publisher's umask
        for dirpath, dirnames, filenames in os.walk(stage):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
    return files, rendered, reused


def _reuse(old, new):
    try:
        os.link(old, new)
    except FileNotFoundError:
        return False
    except OSError:   # another file system, or a link limit: copy
        try:
            shutil.copy2(old, new)
        except OSError:
            return False
    return True


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _point(link, target):
    try:
        point(link, target)
    except OSError as err:
        raise ModulesError(f"cannot replace {link}: {err}; move it away (sitedist manages it as a symlink)") \
            from None


def _generations(root):
    root = os.path.abspath(root)
    return Generations(os.path.join(root, GENERATIONS), os.path.join(root, CURRENT), MANIFEST, _read_manifest)


def _switch(root, number):
    try:
        _generations(root).switch(number)
    except OSError as err:
        raise ModulesError(f"cannot replace {os.path.join(root, CURRENT)}: {err}; move it away (sitedist manages "
                           "it as a symlink)") from None


def _ensure_links(root, formats):
    trees = [FORMATS[fmt][0] for fmt in formats]
    if os.path.isdir(os.path.join(root, CURRENT, catalog.CATALOG)):   # unless modules.catalog.enabled is false
        trees.append(catalog.CATALOG)
    for tree in trees:
        link = os.path.join(root, tree)
        if os.path.islink(link) and os.readlink(link) == f"{CURRENT}/{tree}":
            continue
        if os.path.exists(link) and not os.path.islink(link):
            raise ModulesError(f"{link} exists and is not sitedist's symlink; move it away and publish again")
        _point(link, f"{CURRENT}/{tree}")


def _current(root):
    return _generations(root).current()


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ModulesError(f"{path} is unreadable ({err}); the module tree is damaged: remove that "
                           "generation and publish again") from None


def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def _prune(gens, current, keep):
    """Remove all but the newest ``keep`` generations and ``current``."""
    generations = _generations(os.path.dirname(gens))
    return generations.prune([n for n in generations.select_pruned(keep=keep) if n != current])


def switch_generation(root, number, lock=nullcontext()):
    """Make kept generation ``number`` the current one (and refresh the Lmod cache it was published with)."""
    root = os.path.abspath(root)
    generations = _generations(root)
    with lock:
        kept = generations.numbers()
        if number not in kept:
            raise ModulesError(f"module tree generation {number} does not exist in {generations.directory}; kept: "
                               f"{', '.join(map(str, kept)) or 'none'}")
        manifest = _read_manifest(generations.path(number)) or {}
        _switch(root, number)
        _ensure_links(root, manifest.get("formats", []))
        if manifest.get("lmod_cache"):
            refresh_lmod_cache(manifest["lmod_cache"], manifest["modulepath"])
    return number


def rollback(root, lock=nullcontext()):
    """Switch to the generation before the current one; return its number."""
    root = os.path.abspath(root)
    current = _current(root)
    if current is None:
        raise ModulesError(f"no module tree is published in {root}; nothing to roll back")
    number = _generations(root).previous(current)
    if number is None:
        raise ModulesError(f"module tree generation {current} is the oldest kept in {root}; nothing to roll "
                           "back to (modules.keep sets how many generations are kept)")
    return switch_generation(root, number, lock)


def list_generations(root):
    """The kept generations, oldest first."""
    generations = _generations(root)
    current = generations.current()
    return [Generation(number=n, path=path, created=m.get("created", 0.0), current=n == current,
                       modules=m.get("modules", 0), inputs=m.get("inputs", ""))
            for n, path, m in generations.records()]


def _read_manifest(gen_dir):
    return _read_json(os.path.join(gen_dir, MANIFEST))


def exists(root):
    """Whether a module tree is (or was) published at ``root``: the GC keeps its registration."""
    return os.path.isdir(root)


def live_prefixes(root, skip=()):
    """The artifact prefixes that kept generations (and one being published) reference, except the
    generations ``skip``: GC roots."""
    generations = _generations(root)
    live, unknown = generations.referenced(skip)
    if unknown:
        raise ModulesError(f"module tree generation {unknown[0]} in {generations.directory} has no manifest, so what it "
                           "references is unknown; remove that generation or publish again")
    return live
