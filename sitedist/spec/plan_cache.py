"""A cache of resolved plans: a sync whose inputs have not changed loads its plan instead of resolving
and hashing a thousand recipes again (admin_docs/store.md, "The plan cache").

An entry belongs to one config file (by absolute path) and holds one plan. It is used only when

- its **key** equals the key computed now: a digest of sitedist's own code (every file of the package,
  the shipped modulefile templates included) and version, the Python version, the bytes of every config file (the config and what it
  ``extends``), the loaded config (paths expanded, so ``$VARS`` and ``~`` count), the resolved host (the
  probe report's compilers, MPIs, CUDA toolkits and build tools, declared host packages, toolchains,
  search directories), the probe cache's key (PATH, ``host.paths``, the state of their directories and
  the variables that change what a wrapper reports), the CPU targets and ``$HOME``; and
- every **file** the plan read is unchanged: every recipe file used, every patch (same size, times and
  inode; a file changed in the two seconds before the entry was written is compared by content, as git
  does for "racily clean" files), every recipe directory (its entries: a recipe added in front of the
  one used), and every local ``path:`` source directory (its tree hash is computed again).

Whole files and whole probe results enter the key, never selected fields, so a new recipe field, a new
config key or a new kind of host package is covered without changing this module.

The entry is a pickle in the user's cache directory (loading a pickle runs code, so, as for the
documents cache, only where no other user could have written: core.trust). It starts with one line of
JSON (format, key, the files and their stamps) so that checking an entry never unpickles the plan.
"""

import hashlib
import io
import json
import os
import pickle
import platform
import time

from sitedist.core.hashing import tree_sha256
from sitedist.core.trust import open_private, private_dir, write_private

FORMAT = 2
RACY_S = 2.0   # a file changed this close to the entry's writing is checked by content


def code_digest():
    """Digest of sitedist's own code and package data (the shipped modulefile templates): a changed
    resolver, hash protocol, schema or template is a new key."""
    import sitedist

    root = os.path.dirname(os.path.abspath(sitedist.__file__))
    h = hashlib.sha256(sitedist.__version__.encode())
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in filenames if not f.endswith((".pyc", ".pyo"))):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                h.update(f"{os.path.relpath(path, root)}\0".encode() + f.read() + b"\0")
    return h.hexdigest()


def plan_key(config, host, targets, probe_key):
    """The key of a plan of ``config`` on ``host`` (before resolving: it adds build tools it looks up)."""
    h = hashlib.sha256(f"{FORMAT}\0{platform.python_version()}\0{code_digest()}\0{probe_key}\0"
                       f"{os.path.expanduser('~')}\0".encode())
    for path in config.files:
        with open(path, "rb") as f:
            h.update(f"{path}\0".encode() + f.read() + b"\0")
    fields = {k: v for k, v in vars(config).items() if k != "raw"}
    h.update(repr(sorted(fields.items())).encode())
    h.update(repr(host).encode())
    h.update(repr(sorted(targets.items())).encode())
    return h.hexdigest()


def _stamp(st):
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


def _file_record(path):
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        return [path, _stamp(st), hashlib.sha256(f.read()).hexdigest()]


def _dir_stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ino]


def dir_stamps(dirs):
    """{directory: stamp} of the recipe directories, taken before resolving."""
    return {d: _dir_stamp(d) for d in dirs}


def _file_unchanged(record, written_ns):
    path, stamp, sha = record
    try:
        st = os.stat(path)
    except OSError:
        return False
    if _stamp(st) == stamp and max(st.st_mtime_ns, st.st_ctime_ns) < written_ns - int(RACY_S * 1e9):
        return True
    try:
        return _file_record(path)[2] == sha
    except OSError:
        return False


def _recipes(plan):
    seen = {}
    for node in plan.nodes:
        if node.recipe is not None:
            seen.setdefault(id(node.recipe), node.recipe)
    return list(seen.values())


class _Recipes:
    """The recipes of a plan loaded from the cache, unpickled together when one is first used."""

    def __init__(self, blob):
        self.blob, self.items = blob, None

    def get(self, index):
        if self.items is None:
            self.items, self.blob = pickle.loads(self.blob), None
        return self.items[index]


class LazyRecipe:
    """Stands for a recipe of a cached plan until one of its attributes is used: a no-op sync or a dry
    run (without modules) reads none, and unpickling ten thousand recipes is a large part of a plan."""
    __slots__ = ("_recipes", "_index")

    def __init__(self, recipes, index):
        object.__setattr__(self, "_recipes", recipes)
        object.__setattr__(self, "_index", index)

    def _real(self):
        return self._recipes.get(self._index)

    def __getattr__(self, name):
        return getattr(self._real(), name)

    def __setattr__(self, name, value):
        setattr(self._real(), name, value)

    def __reduce_ex__(self, protocol):
        return self._real().__reduce_ex__(protocol)

    def __eq__(self, other):
        return self._real() == (other._real() if isinstance(other, LazyRecipe) else other)

    __hash__ = None

    def __repr__(self):
        return repr(self._real())


class _PlanPickler(pickle.Pickler):
    def __init__(self, file, recipes):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.index = {id(r): i for i, r in enumerate(recipes)}

    def persistent_id(self, obj):
        return self.index.get(id(obj))


class _PlanUnpickler(pickle.Unpickler):
    def __init__(self, file, recipes):
        super().__init__(file)
        self.recipes, self.proxies = recipes, {}

    def persistent_load(self, pid):
        if pid not in self.proxies:
            self.proxies[pid] = LazyRecipe(self.recipes, pid)
        return self.proxies[pid]


class PlanCache:
    """The plan cache entry of one config (see the module docstring)."""

    def __init__(self, path=None):
        self.path = path
        self.entry = None   # the id of the entry the plan came from or was stored as: its facts are its own
        self._documents = None

    @classmethod
    def for_config(cls, config_path, cache_dir):
        cache_dir = private_dir(cache_dir, "plan cache") if cache_dir else None
        if cache_dir is None:
            return cls()
        key = hashlib.sha256(os.path.abspath(config_path).encode()).hexdigest()[:20]
        return cls(os.path.join(cache_dir, f"plan-{key}.pickle"))

    def header(self, key):
        """The entry's header when its key is ``key`` and no file it read has changed, else None."""
        if not self.path:
            return None
        try:
            with open_private(self.path, "rb") as f:
                head = json.loads(f.readline())
        except (OSError, ValueError):
            return None
        if not isinstance(head, dict) or head.get("format") != FORMAT or head.get("key") != key:
            return None
        written = head.get("written_ns", 0)
        if not all(_file_unchanged(r, written) for r in head.get("files", [])):
            return None
        if not all(_dir_stamp(d) == stamp for d, stamp in head.get("dirs", [])):
            return None
        for path, digest in head.get("trees", []):
            try:
                if tree_sha256(path) != digest:
                    return None
            except OSError:
                return None
        self.entry = head.get("entry")
        return head

    def load(self, key):
        """(plan, host) of a valid entry for ``key``, else None. The recipes' parsed documents (``raw``:
        for errors' file:line and a lock's per-key digests) come only with :meth:`restore_documents`:
        unpickling them is most of the cost of a plan."""
        head = self.header(key)
        if head is None:
            return None
        try:
            with open_private(self.path, "rb") as f:
                f.readline()
                plan_data = f.read(head["plan_bytes"])
                recipes = _Recipes(f.read(head["recipes_bytes"]))
                plan, host = _PlanUnpickler(io.BytesIO(plan_data), recipes).load()
                self._documents = f.read()
        except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError, ValueError, TypeError,
                KeyError):
            self.entry = None
            return None
        return plan, host

    def restore_documents(self, plan):
        """Give the recipes of a plan this cache loaded their parsed documents back (see :meth:`load`)."""
        blob, self._documents = getattr(self, "_documents", None), None
        if not blob:
            return
        documents = pickle.loads(blob)
        for recipe in _recipes(plan):
            if recipe.raw is None:
                recipe.raw = documents.get(recipe.path)

    def save(self, key, plan, host, files=None, dirs=None, trees=None):
        """Store ``plan`` (resolved on ``host``) under ``key`` with what it was resolved from: ``files``
        maps each file read to what the resolver saw (its sha256, or the (mtime_ns, size, inode, ctime_ns) the
        documents cache parsed it at), ``dirs`` each recipe directory to its stamp taken before
        resolving (:func:`dir_stamps`), ``trees`` each local source directory to its tree hash. A file
        that changed since the resolver read it leaves the entry unwritten (the next sync resolves
        again). A cache that cannot be written only costs time."""
        if not self.path:
            return
        written = time.time_ns()
        self.entry = None
        try:
            records = []
            for path, seen in sorted((files or {}).items()):
                record = _file_record(path)
                if isinstance(seen, str):
                    changed = record[2] != seen
                else:
                    mtime, ctime, size, ino = record[1]
                    changed = seen is not None and [mtime, size, ino, ctime] != list(seen)
                if changed:
                    return
                records.append(record)
            for path, digest in (trees or {}).items():
                if tree_sha256(path) != digest:
                    return
            entry = f"{written}-{os.getpid()}"
            head = {"format": FORMAT, "key": key, "entry": entry, "written_ns": written, "files": records,
                    "dirs": sorted([d, stamp] for d, stamp in (dirs or {}).items()),
                    "trees": sorted([p, d] for p, d in (trees or {}).items())}
            recipes = _recipes(plan)
            documents = {r.path: r.raw for r in recipes}
            try:   # the plan (its recipes by number), the recipes without their documents, the documents
                for recipe in recipes:
                    recipe.raw = None
                buffer = io.BytesIO()
                _PlanPickler(buffer, recipes).dump((plan, host))
                recipe_data = pickle.dumps(recipes, protocol=pickle.HIGHEST_PROTOCOL)
            finally:
                for recipe in recipes:
                    recipe.raw = documents[recipe.path]
            data = buffer.getbuffer()   # written as pieces, never copied into one (21 MB at 10,000 packages)
            head["plan_bytes"], head["recipes_bytes"] = data.nbytes, len(recipe_data)
            write_private(self.path, [json.dumps(head).encode() + b"\n", data, recipe_data,
                                      pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL)])
            self.entry = entry
        except (OSError, pickle.PickleError, TypeError, AttributeError, RecursionError):
            pass

    def facts(self):
        """What was derived from this entry's plan and kept beside it (``remember``): {name: value}."""
        if not (self.path and self.entry):
            return {}
        try:
            with open_private(self.path + ".facts.json", "rb") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data.get("facts", {}) if isinstance(data, dict) and data.get("entry") == self.entry else {}

    def remember(self, name, value):
        """Keep ``value`` (JSON) as fact ``name`` of this entry's plan (another entry's facts are dropped)."""
        if not (self.path and self.entry):
            return
        facts = dict(self.facts(), **{name: value})
        try:
            write_private(self.path + ".facts.json", json.dumps({"entry": self.entry, "facts": facts}).encode())
        except OSError:
            pass
