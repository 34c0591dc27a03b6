"""Loading a site config: the file, what it ``extends``, validation, paths, defaults.

Merge rule for ``extends``: the configs named in ``extends`` are loaded in order, later ones override
earlier ones, and the file itself overrides them all. Mappings merge key by key (so a cluster file can
change one package's version), scalars are replaced, and search lists (``recipes``, ``mirrors``,
``upstreams``, ``host.paths``) put the overriding file's entries first, then the base's.

Every relative path is relative to the directory of the file that names it; ``~`` and ``$VARS`` are
expanded.
"""

import os
from dataclasses import dataclass, field
from typing import Optional

from sitedist.errors import ConfigError
from sitedist.spec.doc_cache import DocCache
from sitedist.core.store import PADDING
from sitedist.spec.marked_yaml import MarkedDict, MarkedList, mark_at
from sitedist.spec.schema import SITE_CONFIG
from sitedist.spec.text import check_text

SEARCH_LISTS = ("recipes", "mirrors", "upstreams", "caches")
# (dotted key, kind) of every path-valued setting; '*' stands for any key of a mapping.
PATH_KEYS = [
    ("store", "path"), ("store.root", "path"), ("store.build_dir", "path"),
    ("recipes", "paths"), ("mirrors", "mirrors"), ("upstreams", "paths"),
    ("modules.root", "path"), ("modules.templates", "path"), ("modules.lmod_cache", "path"),
    ("host.paths", "paths"), ("host.packages.*.prefix", "path"), ("profiles.*.root", "path"),
    ("caches.*.url", "url"), ("caches.*.trusted_keys", "paths"),
]

MODULE_DEFAULTS = {
    "formats": ["lua", "tcl"],
    "layout": "flat",
    "naming": "{{name}}/{{version}}",
    "disambiguate": [],
    "defaults": {},
    "hide_implicit": True,
    "templates": None,
    "header": None,
    "footer": None,
    "keep": 5,
    "lmod_cache": None,
}


def default_user_root():
    return os.path.join(os.path.expanduser("~"), ".sitedist")


def _check_user_root(user_root, where):
    """A config without 'store:' builds under ~/.sitedist. Root never does that in a home another user
    owns (sudo -E and su without '-' keep the user's HOME): that user could swap in links or artifacts."""
    from sitedist.core.trust import untrusted_reason

    reason = untrusted_reason(user_root)
    if reason is not None:
        raise ConfigError(f"no 'store:' is set, and the default {user_root} is not safe to use: {reason}",
                          where=where, hint="set 'store:' (and 'modules: root:') to directories you own, or "
                                            "run with your own HOME (sudo -i, su -)")


@dataclass
class PackageRequest:
    name: str
    version: Optional[str]
    options: dict
    toolchains: list
    recipe: str
    where: str


@dataclass
class ProfileSpec:
    name: str
    packages: list
    root: str
    conflicts: str = "error"
    prefer: list = field(default_factory=list)
    keep: int = 10
    where: str = ""


@dataclass
class SiteConfig:
    path: str
    files: list
    store_root: str
    store_group: Optional[str]
    build_dir: Optional[str]
    keep_failed: bool
    recipe_dirs: list
    mirrors: list
    upstreams: list
    packages: dict
    toolchains: dict
    host: dict
    targets: list
    modules: Optional[dict]
    profiles: dict
    jobs: Optional[int]
    raw: dict  # the merged, marked document: for error locations
    executor: dict = field(default_factory=lambda: {"type": "local"})  # where builds run (admin_docs/slurm.md)
    history_keep: int = 0   # GC keeps the artifacts of this many recorded syncs (reproducible-stacks.md)
    caches: list = field(default_factory=list)  # binary caches, in order (admin_docs/caches.md)
    store_requested: str = ""  # 'store: root' as written; store_root is padded from it (padded_length)
    tools: dict = field(default_factory=dict)      # build tool -> 'host' | {'recipe': NAME, 'version': V}
    cuda_arch: list = field(default_factory=list)  # GPU architectures of CUDA builds: ['80', '90']
    python: str = "host"   # the Python of Python packages: 'host' or a package providing one (python.md)

    def where(self, *path):
        """file:line of a setting, for error messages."""
        return str(mark_at(self.raw, path) or self.path)


def _expand(value, base_dir):
    value = os.path.expandvars(os.path.expanduser(value))
    return os.path.normpath(os.path.join(base_dir, value))


def _copy_marked(node):
    out = MarkedDict(node)
    out.mark = node.mark
    out.key_marks = dict(node.key_marks)
    return out


def _resolved(value, kind, base_dir):
    if kind == "path":
        return _expand(value, base_dir) if isinstance(value, str) else value
    if kind == "url":
        return value if not isinstance(value, str) or "://" in value else _expand(value, base_dir)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return value
    out = MarkedList(v if (kind == "mirrors" and "://" in v) else _expand(v, base_dir) for v in items)
    out.mark = getattr(value, "mark", None)
    out.item_marks = list(getattr(value, "item_marks", []))
    return out


def _with_paths(doc, base_dir):
    """``doc`` with its path settings made absolute. Parts that change are copied, the rest shared, so
    the cached document is never modified."""
    def visit(node, parts, kind):
        head, rest = parts[0], parts[1:]
        if isinstance(node, MarkedList) and head == "*":
            out = node
            for i, value in enumerate(node):
                new = visit(value, rest, kind) if rest else _resolved(value, kind, base_dir)
                if new is not value:
                    if out is node:
                        out = MarkedList(node)
                        out.mark = getattr(node, "mark", None)
                        out.item_marks = list(getattr(node, "item_marks", []))
                    out[i] = new
            return out
        if not isinstance(node, MarkedDict):
            return node
        out = node
        for key in list(node) if head == "*" else ([head] if head in node else []):
            value = node[key]
            new = visit(value, rest, kind) if rest else _resolved(value, kind, base_dir)
            if new is not value:
                if out is node:
                    out = _copy_marked(node)
                out[key] = new
        return out

    for dotted, kind in PATH_KEYS:
        doc = visit(doc, dotted.split("."), kind)
    return doc


def _merge(base, over, key=None):
    """Merge ``over`` onto ``base`` (both marked), keeping marks of the winning values."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = MarkedDict()
        out.mark = getattr(over, "mark", None) or getattr(base, "mark", None)
        for k in list(base) + [k for k in over if k not in base]:
            if k in base and k in over:
                out[k] = _merge(base[k], over[k], k)
                out.key_marks[k] = over.key_marks.get(k) if hasattr(over, "key_marks") else None
            elif k in over:
                out[k] = over[k]
                out.key_marks[k] = getattr(over, "key_marks", {}).get(k)
            else:
                out[k] = base[k]
                out.key_marks[k] = getattr(base, "key_marks", {}).get(k)
        return out
    if key in SEARCH_LISTS + ("paths",) and isinstance(base, list) and isinstance(over, list):
        out = MarkedList(list(over) + [v for v in base if v not in over])
        out.mark = getattr(over, "mark", None)
        out.item_marks = list(getattr(over, "item_marks", [])) + [
            m for v, m in zip(base, getattr(base, "item_marks", [])) if v not in over
        ]
        return out
    return over


def _load_tree(path, chain, cache):
    path = os.path.abspath(path)
    if path in chain:
        cycle = " -> ".join(chain[chain.index(path):] + [path])
        raise ConfigError(f"'extends' forms a cycle: {cycle}", where=path,
                          hint="remove one of the 'extends' entries")
    doc = cache.load(path, SITE_CONFIG, "site config")
    if doc is None:
        doc = MarkedDict()
    base_dir = os.path.dirname(path)
    doc = _with_paths(doc, base_dir)
    files = [path]
    merged = MarkedDict()
    extends = doc.get("extends", [])
    extends = [extends] if isinstance(extends, str) else extends
    for i, name in enumerate(extends):
        target = _expand(name, base_dir)
        if not os.path.isfile(target):
            where = doc["extends"].mark_of(i) if isinstance(doc["extends"], MarkedList) else doc.mark_of("extends")
            raise ConfigError(f"extends: no such config file {target}", where=str(where),
                              hint="paths in 'extends' are relative to the file that names them")
        sub, sub_files = _load_tree(target, chain + [path], cache)
        merged = _merge(merged, sub)
        files += [f for f in sub_files if f not in files]
    if "extends" in doc:
        doc = _copy_marked(doc)
        del doc["extends"]
    return _merge(merged, doc), files


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_config(path, cache=None):
    """Load, merge and validate a site config; returns a :class:`SiteConfig`. ``cache`` is a
    :class:`DocCache` of already validated documents."""
    if not os.path.isfile(path):
        raise ConfigError(f"site config not found: {path}")
    raw, files = _load_tree(path, [], cache or DocCache())
    path = os.path.abspath(path)

    store = raw.get("store")
    user_root = default_user_root()
    if store is None:
        _check_user_root(user_root, str(raw.mark) if getattr(raw, "mark", None) else path)
        store = {"root": os.path.join(user_root, "store")}
    elif isinstance(store, str):
        store = {"root": store}

    packages = {}
    for name, body in (raw.get("packages") or {}).items():
        body = body or {}
        version = body.get("version")
        packages[name] = PackageRequest(
            name=name,
            version=str(version) if version is not None else None,
            options=dict(body.get("options") or {}),
            toolchains=list(body.get("toolchains") or []),
            recipe=body.get("recipe", name),
            where=str(raw["packages"].mark_of(name)),
        )

    modules = raw.get("modules")
    if modules is not None:
        modules = {**MODULE_DEFAULTS, **dict(modules)}
        if "root" not in modules:
            if raw.get("store") is None:
                modules["root"] = os.path.join(user_root, "modules")
            else:
                raise ConfigError("modules: 'root' is required (where the module tree is published)",
                                  where=str(raw.mark_of("modules")),
                                  hint="add e.g. 'root: /opt/site/modules' under 'modules:'")
        # Text and paths that modulefiles carry (as comments, the prefixes' directory, MODULEPATH).
        for key in ("header", "footer", "root"):
            check_text(modules[key], f"modules.{key}", str(mark_at(raw, ("modules", key)) or path),
                       multiline=key != "root", path=key == "root")
        modules["defaults"] = {k: str(v) for k, v in (modules.get("defaults") or {}).items()}
        modules["formats"] = list(modules["formats"])
        modules["disambiguate"] = list(modules["disambiguate"])

    profiles = {}
    for name, body in (raw.get("profiles") or {}).items():
        if isinstance(body, list):
            body = {"packages": body}
        profiles[name] = ProfileSpec(
            name=name,
            packages=list(body["packages"]),
            root=body.get("root") or os.path.join(os.path.dirname(store["root"]), "profiles", name),
            conflicts=body.get("conflicts", "error"),
            prefer=list(body.get("prefer", [])),
            keep=body.get("keep", 10),
            where=str(raw["profiles"].mark_of(name)),
        )

    store_root = os.path.normpath(store["root"])
    check_text(store_root, "store root", str(mark_at(raw, ("store",)) or path), path=True)
    roots = [(modules["root"], ("modules", "root"))] if modules else []
    roots += [(p.root, ("profiles", name)) for name, p in profiles.items()]
    for root, where in roots:  # not 'path': that is the config's own path, kept in SiteConfig.path
        root = os.path.normpath(root)
        if root == store_root or root.startswith(store_root + os.sep) or store_root.startswith(root + os.sep):
            mark = mark_at(raw, where)
            raise ConfigError(f"{'.'.join(where)}: {root} overlaps the store {store_root}",
                              where=str(mark or root), hint="publish modules and profiles outside the store")
    recipe_dirs = _as_list(raw.get("recipes"))
    requested_root = store["root"]
    if store.get("padded_length"):
        store = {**store, "root": padded_root(store["root"], store["padded_length"])}
    return SiteConfig(
        path=path,
        files=files,
        store_root=store["root"],
        store_requested=requested_root,
        caches=[dict(c) for c in raw.get("caches") or []],
        store_group=store.get("group"),
        build_dir=store.get("build_dir"),
        keep_failed=store.get("keep_failed", True),
        recipe_dirs=recipe_dirs,
        mirrors=_as_list(raw.get("mirrors")),
        upstreams=_as_list(raw.get("upstreams")),
        packages=packages,
        toolchains={k: dict(v) for k, v in (raw.get("toolchains") or {}).items()},
        host=dict(raw.get("host") or {}),
        targets=_as_list(raw.get("target")) or ["generic"],
        modules=modules,
        profiles=profiles,
        jobs=raw.get("jobs"),
        raw=raw,
        executor=_executor(raw),
        history_keep=(raw.get("history") or {}).get("keep", 0),
        tools={k: ({"recipe": k} if v == "recipe" else v if v == "host"
                   else {"recipe": v["recipe"], **({"version": str(v["version"])} if "version" in v else {})})
               for k, v in (raw.get("tools") or {}).items()},
        cuda_arch=[str(a) for a in raw.get("cuda_arch") or []],
        python=raw.get("python", "host"),
    )


def _executor(raw):
    """The ``executor:`` block as a plain dict (build/slurm.py checks what it passes to sbatch)."""
    block = raw.get("executor")
    return {"type": "local"} if block is None else dict(block)




def padded_root(root, length):
    """``root`` extended with padding directories to ``length`` characters (at least), so that artifacts
    built in it hold a store path long enough to be rewritten in place to any path up to that length
    (admin_docs/caches.md). A root already that long is used as it is."""
    root = os.path.normpath(root)
    while len(root) < length:
        room = length - len(root) - 1  # the '/'
        part = (PADDING * (1 + min(room, 200) // len(PADDING)))[:max(min(room, 200), len(PADDING))]
        root = os.path.join(root, part)
    return root
