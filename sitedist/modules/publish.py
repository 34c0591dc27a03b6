"""Publishing module trees atomically, in generations that share what did not change.

Layout of ``modules.root``::

    content/<digest>/               one module name's directory (in one format, at one level): its
                                    modulefiles and its .modulerc, named by a digest of everything they
                                    are rendered from; written once, never changed, shared by every
                                    generation that links it
    links/<digest>.<k>              one symlink to ../ (k times) content/<digest>, hard-linked into every
                                    generation that has that name directory <k> - 3 levels below its tree
    generations/<N>/manifest.json   what generation N is: its inputs' digest and the artifact prefixes it
                                    references (each generation is a GC root)
    generations/<N>/names.json      each name directory of generation N -> its content digest
    generations/<N>/lmod/, tcl/     the trees: level directories of symlinks, one per module name, e.g.
                                    lmod/Core/zlib -> ../../../../content/<digest> (a hard link of
                                    links/<digest>.4 where the file system allows it)
    generations/<N>/catalog/        the catalog page of this tree
    generations/.spare/             the directory of the generation pruned last: not a generation, not a
                                    GC root; the next publish starts its trees from it
    current -> generations/<N>      switched by one rename: users see the old tree or the new one
    lmod -> current/lmod            stable: what users put in MODULEPATH (hierarchical: lmod/Core)
    tcl -> current/tcl

A publish whose inputs equal the current generation's writes nothing. Otherwise it plans the tree, and
for each module name (in each format) computes the digest of what renders its directory: the planned
modules of that name, its default and hidden versions, the templates, header and footer, the tree's path
and this package's code. A name directory that a kept generation already has is linked, not written; only
the others are rendered, into ``content/<digest>`` (after one change: the changed name's directory in
each format; many directories are rendered by several processes, ``core.forked``). The new generation
is then written under ``generations/.staging-<N>-<pid>`` (its manifest first, so that a GC running
meanwhile keeps its prefixes), flushed to disk, renamed to ``generations/<N>`` and switched to: the
protocol of ``sitedist.core.generations.Generations``, the same as profiles'.

A content directory is trusted only while a kept generation lists it in its names.json (it was flushed to
disk before that generation was committed); any other directory under ``content/`` is what a crashed
publish or a prune left, removed by the next publish. Directories that kept generations list are never
written to or removed, so the current tree and every rollback target stay whole; pruning a generation
removes the content directories no kept generation lists any more.

A generation's symlinks are hard links of symlinks kept under ``links/``: the same symlink inode in every
generation. Creating a symlink allocates an inode, which on ext4 costs 40-400 us of system time (5,000 of
them: 0.2-2 s, varying from minute to minute on this project's VMs), while a hard link only adds a
directory entry (5,000: 0.08 s). Where linking is refused (a file system without hard links, another
admin's inode under ``fs.protected_hardlinks``, a full link count), the publish makes plain symlinks.

Most publishes change a few names of thousands, and each also prunes the oldest generation. So the pruned
generation's directory is not deleted but kept as ``generations/.spare`` (its manifest removed), and the
next publish by the same user (``Generations.stage``: only a spare it owns that nobody else may change)
renames it to its staging directory: it reads each link there (a ``readlink``, no inode
made) and keeps those pointing where the new tree's must, removes everything else (whatever it is) and
makes only the missing links. Nothing in the spare is trusted: the committed tree is what the plan says.
"""

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from sitedist.core import forked
from sitedist.core.durable import current_umask, flush_tree, fsync_dir, sync_filesystem, write_atomic
from sitedist.core.generations import Generations, point
from sitedist.errors import ModulesError
from sitedist.modules import catalog
from sitedist.modules.lmod_cache import cache_stale, refresh_lmod_cache
from sitedist.modules.plan import plan_tree
from sitedist.modules.render import FORMATS, Renderer, module_context

GENERATIONS = "generations"
CONTENT = "content"
LINKS = "links"
CURRENT = "current"
MANIFEST = "manifest.json"
NAMES = "names.json"
_SYNC_FS = 64   # content directories from which one syncfs flushes them (instead of an fsync a file)
_FORK_FROM = 512   # content directories from which they are rendered by several processes (core.forked)
COMPILED = ".compiled-templates"   # Jinja2's bytecode cache of the templates, for the next publish
_CONFIG_KEYS = ("formats", "layout", "naming", "disambiguate", "defaults", "hide_implicit", "header", "footer",
                "catalog", "target")
_PACKAGE = Path(__file__).parent.parent
# The code a modulefile's text depends on besides the templates: this package, and the names and checks
# of the spec it uses (root_var, problem).
_CODE = sorted(Path(__file__).parent.glob("*.py")) + [_PACKAGE / "spec" / "schema.py", _PACKAGE / "spec" / "text.py"]


@dataclass
class PublishResult:
    generation: int          # the current generation after publishing
    root: str
    path: str                # the generation's directory
    changed: bool            # False: the inputs were the current generation's; nothing was written
    rendered: int = 0        # modulefiles and .modulerc files rendered (in new content directories)
    reused: int = 0          # files in the content directories linked from kept generations
    modules: int = 0         # modules in the tree (each in every format)
    notes: list = field(default_factory=list)   # name clashes resolved by modules.disambiguate
    modulepath: dict = field(default_factory=dict)   # format -> the stable MODULEPATH entry
    pruned: list = field(default_factory=list)  # generation numbers removed
    written_dirs: int = 0    # content directories written (one per changed module name and format)
    linked_dirs: int = 0     # content directories reused from kept generations
    links: int = 0           # symbolic links the new generation's trees are made of
    made_links: int = 0      # of those, the ones made (not kept from the pruned generation it reuses)
    removed_dirs: int = 0    # content directories removed (no kept generation lists them)
    lmod_cache: dict = None  # with modules.lmod_cache: what its refresh did (fields of lmod_cache.CacheRefresh)


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


def code_digest():
    """Digest of the code that modulefiles' text depends on, besides the templates."""
    h = hashlib.sha256()
    for path in _CODE:
        h.update(path.read_bytes())
    return h.hexdigest()


def inputs_digest(entries, config, template_digest, code=None, reprs=None):
    """Digest of everything a tree is generated from (including this package's code). ``reprs``: id(entry)
    -> repr(entry), made once per publish (:func:`entry_reprs`)."""
    h = hashlib.sha256((code or code_digest()).encode())
    conf = {k: config.get(k) for k in _CONFIG_KEYS}
    conf["defaults"] = sorted((conf["defaults"] or {}).items())
    h.update(repr((os.path.abspath(config["root"]), sorted(conf.items()), template_digest)).encode())
    reprs = reprs if reprs is not None else entry_reprs(entries)
    h.update("\n".join(sorted({reprs[id(e)] for e in entries})).encode())   # in any order, once each
    return h.hexdigest()


def entry_reprs(entries):
    """id(entry) -> repr(entry): what names an entry in every digest of a publish, made once."""
    return {id(e): repr(e) for e in entries}


def publish(entries, config, lock=nullcontext()):
    """Generate the module tree for ``entries`` and switch users to it; see the module docstring.

    Raises ModulesError (before writing anything) on name clashes and other planning errors."""
    root = os.path.abspath(config["root"])
    formats = list(config.get("formats", ["lua", "tcl"]))
    renderer = Renderer(config.get("templates"))
    code = code_digest()
    entries = list(entries)
    reprs = entry_reprs(entries)
    digest = inputs_digest(entries, config, renderer.digest, code, reprs)
    generations = _generations(root)
    gens = generations.directory
    with lock:
        for directory in (gens, os.path.join(root, CONTENT), os.path.join(root, LINKS)):
            if not os.path.isdir(directory):
                os.makedirs(directory)
                os.chmod(directory, 0o755)   # users must read the tree whatever the publisher's umask
        generations.remove_leftovers()
        current = generations.current()
        old = _read_json(os.path.join(gens, str(current), MANIFEST)) if current else None
        if old and old.get("inputs") == digest:
            _ensure_links(root, formats)
            if config.get("lmod_cache") and cache_stale(os.path.join(root, CURRENT), config["lmod_cache"]):
                refresh_lmod_cache(config["lmod_cache"], old["modulepath"],
                                   _read_json(os.path.join(gens, str(current), NAMES)))
            return PublishResult(generation=current, root=root, path=os.path.join(gens, str(current)),
                                 changed=False, modules=old.get("modules", 0), notes=old.get("notes", []),
                                 modulepath=modulepath_roots(config))
        plan = plan_tree(entries, config)
        renderer.keep_compiled(os.path.join(root, COMPILED))
        number, stage = generations.stage(reuse=True)   # a pruned generation's directory, if one is kept
        _clear_except(stage, [FORMATS[fmt][0] for fmt in formats])
        manifest = {
            "generation": number, "created": time.time(), "inputs": digest, "layout": plan.layout,
            "formats": formats, "modules": len(plan.modules), "lmod_cache": config.get("lmod_cache"),
            "modulepath": modulepath_roots(config), "notes": plan.notes,
            "prefixes": sorted(plan.prefixes()),
        }
        generations.write_record(stage, manifest)   # a GC root from now on
        result = PublishResult(generation=number, root=root, path=generations.path(number), changed=True,
                               modules=len(plan.modules), notes=plan.notes, modulepath=manifest["modulepath"])
        kept = _kept_content(generations)
        try:
            tree = _Tree(plan, config, renderer, root, stage, code, reprs, result)
            names = tree.write(set().union(*kept.values()))
            if catalog.enabled(config):   # the catalog page switches and rolls back with its tree
                previous = os.path.join(gens, str(current), catalog.CATALOG) if current else None
                catalog.write_catalog(plan, config, os.path.join(stage, catalog.CATALOG), renderer, number,
                                      previous, salt=code + renderer.digest, reprs=reprs, groups=tree.texts)
            write_atomic(os.path.join(stage, NAMES), json.dumps(names, separators=(",", ":")))
            generations.commit(stage, number)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _switch(root, number)
        _ensure_links(root, formats)
        kept[number] = set(names.values())
        result.pruned = _prune(gens, number, int(config.get("keep", 5)))
        if result.pruned:
            result.removed_dirs = _sweep(root, [kept[n] for n in generations.numbers() if n in kept])
        if config.get("lmod_cache"):   # Lmod evaluates the names whose content changed
            result.lmod_cache = vars(refresh_lmod_cache(config["lmod_cache"], manifest["modulepath"], names))
    return result


class _Tree:
    """Writing one generation's trees: the content directories no kept generation has, then the links."""

    def __init__(self, plan, config, renderer, root, stage, code, reprs, result):
        self.plan, self.renderer, self.root, self.stage, self.result = plan, renderer, root, stage, result
        self.reprs = reprs
        self.formats = list(config.get("formats", ["lua", "tcl"]))
        self.header = tuple((config.get("header") or "").splitlines())
        self.footer = tuple((config.get("footer") or "").splitlines())
        self.content = os.path.join(root, CONTENT)
        self.links = os.path.join(root, LINKS)
        self.hardlinks = True                    # until the file system refuses one (_link)
        self.code = code
        self.fix_mode = bool(current_umask() & 0o055)   # users must read the tree whatever the publisher's umask
        self.contexts = {}                       # id(planned module) -> its context in the first format
        self.texts = {}                          # (level, name) -> digest of its planned modules and .modulerc

    def write(self, valid):
        """Write the trees into the stage; return names.json: '<tree>/<level>/<name>' -> content digest."""
        groups = defaultdict(list)
        for m in self.plan.modules:
            groups[(m.level, m.name)].append(m)
        rcs = self.plan.rc_dirs()
        keys = sorted(set(groups) | set(rcs), key=lambda k: (-_depth(k), k))   # nested names first
        paths = {_join(level, name) for level, name in keys}
        texts = self.texts = {
            k: hashlib.sha256("\n".join([repr((k, rcs.get(k)))] + [self._planned(m) for m in groups.get(k, ())])
                              .encode()).digest() for k in keys}
        present = set(os.listdir(self.content))
        for leftover in present - valid:   # of a crashed publish, or no longer listed: never linked now
            shutil.rmtree(os.path.join(self.content, leftover))
        present &= valid
        # (key, path in the tree, the name directory holding it or None: a link of the tree)
        places = [(k, p, _parent(p, k[0], paths) if "/" in k[1] else None)
                  for k, p in ((k, _join(*k)) for k in keys)]
        names = {}
        jobs = []   # (content digest, format, name, modules, .modulerc, nested names, tree root, key's index)
        index = {k: i for i, k in enumerate(keys)}
        for fmt in self.formats:
            tree, ext, rc_name = FORMATS[fmt]
            tree_root = f"{self.root}/{tree}"
            base = hashlib.sha256(repr((self.code, self.renderer.digest, fmt, tree_root, self.header,
                                        self.footer)).encode()).digest()
            links, children = [], defaultdict(list)
            for key, path, parent in places:
                kids = children.pop(path, None) if children else None
                if kids:
                    kids.sort()
                d = hashlib.sha256(base + texts[key] + (repr(kids).encode() if kids else b"")).hexdigest()[:32]
                names[f"{tree}/{path}"] = d
                if parent is None:
                    links.append((path, d))
                else:
                    children[parent].append((path[len(parent) + 1:], d))
                if d in present:
                    self.result.linked_dirs += 1
                    self.result.reused += len(groups.get(key, ())) + (key in rcs)
                    continue
                jobs.append((d, fmt, key[1], groups.get(key, []), rcs.get(key), kids or (), tree_root, index[key]))
                present.add(d)
            self._write_links(tree, links)
        self._write_all(jobs)
        if self.fix_mode:   # the trees' directories, once all formats are written
            for dirpath, _, _ in os.walk(self.stage):
                os.chmod(dirpath, 0o755)
        # Flushed before the generation that lists them is committed; many at once by one syncfs
        written = [job[0] for job in jobs]
        if len(written) < _SYNC_FS or not sync_filesystem(self.content):
            for d in written:
                flush_tree(os.path.join(self.content, d))
        if written:
            fsync_dir(self.content)
        return names

    def _planned(self, m):
        """What names planned module ``m``: its fields, with its entry's repr made once per publish."""
        entry = self.reprs.get(id(m.entry)) or repr(m.entry)   # an entry made by plan_tree: its own repr
        return f"{entry}\0{m[1:]!r}"   # its fields after the entry; reprs hold no newline

    def _write_all(self, jobs):
        """Write the content directories of ``jobs``; where there are many (a full publish), split over
        processes (``core.forked``), each name's directories in both formats in one of them (its modules'
        contexts are made once for both)."""
        for job in jobs:
            self.result.written_dirs += 1
            self.result.rendered += len(job[3]) + bool(job[4])
        n = forked.processes() if len(jobs) >= _FORK_FROM else 1
        shares = [[] for _ in range(n)]
        for job in jobs:
            shares[job[-1] % n].append(job[:-1])
        forked.run_shares(lambda share: [self._write_content(*job) for job in share], [s for s in shares if s],
                          errors=(ModulesError,))

    def _write_content(self, d, fmt, name, mods, rc, kids, tree_root):
        _, ext, rc_name = FORMATS[fmt]
        path = os.path.join(self.content, d)
        os.mkdir(path)
        if self.fix_mode:
            os.chmod(path, 0o755)
        files = []
        for m in mods:
            ctx = self.contexts.get(id(m))
            if ctx is None:
                ctx = self.contexts[id(m)] = module_context(m, tree_root, self.header, self.footer)
            elif m.opens:
                ctx = dict(ctx, use=f"{tree_root}/{m.opens}")
            files.append((m.version + ext, f"modulefile.{fmt}.j2", ctx))
        if rc:
            default, hidden = rc
            files.append((rc_name, f"modulerc.{fmt}.j2", {"name": name, "default": default or "",
                                                          "hidden": tuple(hidden)}))
        for file_name, template, ctx in files:
            file = os.path.join(path, file_name)
            with open(file, "w", encoding="utf-8") as f:
                f.write(self.renderer.render(template, ctx))
            if self.fix_mode:
                os.chmod(file, 0o644)
        for rel, child in kids:   # a module name inside this one's directory ('a' and 'a/b')
            link = os.path.join(path, rel)
            os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
            os.symlink("../" * (rel.count("/") + 1) + child, link)
        if self.fix_mode and any("/" in rel for rel, _ in kids):   # makedirs' mode went through the umask
            for dirpath, _, _ in os.walk(path):
                os.chmod(dirpath, 0o755)

    def _write_links(self, tree, links):
        """The tree of one format: its level directories, and the links [(path, digest)] of the module
        names that are not inside another one's directory. In a reused stage (a pruned generation's
        directory) the tree is there already: what differs is removed, what is missing made."""
        top = os.path.join(self.stage, tree)
        content = f"{CONTENT}/"
        todo = {}
        for path, d in links:
            up = path.count("/") + 3
            todo[path] = ("../" * up + content + d, f"{d}.{up}")
        levels = set(self.plan.levels)
        if os.path.isdir(top):
            dirs = levels.union(*(_ancestors(path) for path in todo))
            self._reconcile(top, "", todo, dirs)
        made = set()
        for level in levels:
            os.makedirs(os.path.join(top, level), exist_ok=True)
            made.add(level)
        for path, (target, key) in todo.items():
            level = path.rpartition("/")[0]   # '' (flat) or the level and the head of a name with '/'
            if level not in made:
                os.makedirs(os.path.join(top, level), exist_ok=True)
                made.add(level)
            self._link(target, key, f"{top}/{path}")
        self.result.links += len(links)
        self.result.made_links += len(todo)

    def _reconcile(self, directory, rel, todo, dirs):
        """Keep what is right under ``directory`` (``rel`` in the tree): a symlink at a path of ``todo``
        (path -> (target, key)) pointing at its target, which is then taken off ``todo``, and the
        directories ``dirs`` holding such paths; remove anything else."""
        with os.scandir(directory) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_symlink():
                    want = todo.get(path)
                    if want is not None and os.readlink(entry.path) == want[0]:
                        del todo[path]
                        continue
                    os.unlink(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    if path in dirs:
                        self._reconcile(entry.path, path, todo, dirs)
                    else:
                        shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)

    def _link(self, target, key, dest):
        """Make ``dest`` a symlink to ``target``: a hard link of ``links/<key>`` (made now if missing), or
        where the file system refuses that, a new symlink (see the module docstring)."""
        if self.hardlinks:
            source = f"{self.links}/{key}"
            try:
                os.link(source, dest, follow_symlinks=False)
                return
            except FileNotFoundError:   # the first generation with this name directory at this depth
                os.symlink(target, dest)
                try:
                    os.link(dest, source, follow_symlinks=False)   # whole or absent: its name says where it points
                except FileExistsError:
                    pass
                except OSError:
                    self.hardlinks = False
                return
            except OSError:   # EPERM, EMLINK, EXDEV, ENOTSUP, ...
                self.hardlinks = False
        os.symlink(target, dest)


def _join(level, name):
    return f"{level}/{name}" if level else name


def _depth(key):
    return _join(*key).count("/")


def _ancestors(path):
    """The directories above ``path`` (a tree-relative path), nearest first."""
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


def _parent(path, level, paths):
    """The nearest module name directory (in ``paths``) that holds ``path``, below its level."""
    for p in _ancestors(path):
        if len(p) <= len(level):
            return None
        if p in paths:
            return p
    return None


def _kept_content(generations):
    """number -> the content digests listed by each kept generation (none for one written before
    generations shared content)."""
    out = {}
    for n in generations.numbers():
        names = _read_json(os.path.join(generations.path(n), NAMES)) or {}
        out[n] = set(names.values())
    return out


def _sweep(root, kept):
    """Remove the content directories that none of the ``kept`` sets of digests lists, and their symlinks
    under ``links/`` (and anything there not named ``<digest>.<k>``); return how many directories."""
    content = os.path.join(root, CONTENT)
    valid = set().union(*kept)
    removed = 0
    for name in os.listdir(content):
        if name not in valid:
            shutil.rmtree(os.path.join(content, name), ignore_errors=True)
            removed += 1
    links = os.path.join(root, LINKS)
    for name in os.listdir(links) if os.path.isdir(links) else ():
        digest, _, up = name.partition(".")
        if digest not in valid or not up.isdigit():
            try:
                os.unlink(os.path.join(links, name))
            except OSError:   # gone, or something sitedist did not make there: left alone
                pass
    return removed


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


def _prune(gens, current, keep):
    """Remove all but the newest ``keep`` generations and ``current``."""
    generations = _generations(os.path.dirname(gens))
    return generations.prune([n for n in generations.select_pruned(keep=keep) if n != current], spare=True)


def _clear_except(stage, trees):
    """Empty a staging directory but for the directories named in ``trees`` (a reused stage's trees, which
    the publish then corrects link by link)."""
    with os.scandir(stage) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in trees:
                    shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


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
            refresh_lmod_cache(manifest["lmod_cache"], manifest["modulepath"],
                               _read_json(os.path.join(generations.path(number), NAMES)))
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
