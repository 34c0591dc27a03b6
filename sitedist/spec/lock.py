"""Lock files: what a config resolved to, written down so that the ids can be reproduced and every
difference explained (admin_docs/reproducible-stacks.md).

A lock is a JSON document, keys sorted, one value per line (diff-friendly), with nothing in it that
changes from one run to the next (no times, no store paths), so locking twice gives the same bytes:

- ``artifacts``: ``"<name>/<version>-<id>"`` -> name, version, id, kind, toolchain, target, recipe, the
  full hashed document (``doc``: the id is recomputed from it when a lock is read) and ``module``,
  what the module tree shows of it (description, env, ...: publishing a past lock needs no recipe);
- ``recipes``: each recipe's sha256 and a digest per top-level key (so a drift names the key that
  changed: ``recipe changed: configure_args``);
- ``sources``: each source's checksum and where it comes from;
- ``host``: the compilers and MPIs (their probed identities), toolchains, CPU targets and Python;
- ``sitedist``: its version and protocol numbers; ``format``: this file's format.

Everything here is pure: it reads a resolved plan (spec.resolve) and the recipe files, never the store.
:func:`compare` and :func:`explain` say which packages differ between two locks and why.
"""

import difflib
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field

from sitedist.core.durable import write_atomic
from sitedist.core.hashing import artifact_id
from sitedist.errors import ConfigError

FORMAT = 1
SUFFIX = ".lock"


def protocols():
    """The protocol numbers this sitedist hashes with, read from where each is defined."""
    from sitedist.core import hashing
    from sitedist.spec import resolve

    return {"hash": hashing.PROTOCOL, "builder": resolve.BUILDER}


def default_path(config_path):
    """``<config>.lock`` beside the config."""
    return os.path.abspath(config_path) + SUFFIX


# --- building a lock from a plan -----------------------------------------------------------------

def _key_digest(value):
    # repr of the parsed YAML (str, int, bool, None, lists and mappings in file order): only compared
    # to name the keys of a recipe that changed, never hashed into an id.
    return hashlib.sha256(repr(value).encode("utf-8")).hexdigest()[:16]


def recipe_entry(recipe, base_dir):
    with open(recipe.path, "rb") as f:
        data = f.read()
    return {"path": os.path.relpath(recipe.path, base_dir), "sha256": hashlib.sha256(data).hexdigest(),
            "keys": {k: _key_digest(v) for k, v in (recipe.raw or {}).items()}}


def module_fields(node):
    """What the module tree shows of a node besides its prefix: the fields of a
    ``modules.entry.ModuleEntry`` (tuples as lists), from the node alone."""
    if isinstance(node, LockedNode):
        return dict(node.module)
    if node.kind != "package":
        host = node.host
        return {"kind": node.kind, "description": host.description, "homepage": "", "compiler": None, "mpi": None,
                "toolchain": "", "options": [], "run_depends": [], "link_depends": [], "keywords": [],
                "explicit": True,
                "env": [["set", var, path] for var, path in sorted(host.build_env.items())]}
    tc, recipe = node.toolchain, node.recipe
    defaults = {k: v["default"] for k, v in recipe.options.items()}
    return {
        "kind": "package", "description": recipe.description, "homepage": recipe.homepage,
        "compiler": None if tc.default else [tc.compiler.name, tc.compiler.version],
        "mpi": [tc.mpi.name, tc.mpi.version] if tc.mpi else None,
        "toolchain": "" if tc.default else tc.name,
        "options": sorted([k, str(v)] for k, v in node.options.items() if defaults.get(k) != v),
        # A CUDA build's module loads the CUDA toolkit it was built with (nvcc, the runtime it links).
        # A Python package's module loads its Python (python3 on PATH is the one it was built for).
        "run_depends": [[d.name, d.version, d.aid] for d in node.deps.get("run", [])
                        + [h for h in node.deps.get("host", []) if h.kind == "cuda"] + node.deps.get("python", [])],
        "link_depends": [[d.name, d.version, d.aid] for d in node.deps.get("link", [])],
        "keywords": list(recipe.keywords),
        "env": [[op, var, value] for op in ("set", "prepend", "append")
                for var, value in sorted(recipe.env.get(op, {}).items())],
        "explicit": node.explicit,
    }


def _source_entry(source, base_dir):
    out = {k: source[k] for k in ("sha256", "url", "filename", "git", "commit") if k in source}
    if "path" in source:
        out["path"] = os.path.relpath(source["path"], base_dir)
    return out


def build_lock(config, host, plan, base_dir):
    """The lock document of a resolved ``plan`` of ``config`` on ``host``; paths relative to ``base_dir``
    (the lock file's directory)."""
    from sitedist import __version__

    artifacts, recipes, sources = {}, {}, {}
    for node in plan.nodes:
        entry = {"name": node.name, "version": node.version, "id": node.aid, "kind": node.kind,
                 "toolchain": node.toolchain.name if node.toolchain else None, "target": node.target or None,
                 "recipe": node.recipe.name if node.recipe else None, "doc": node.doc,
                 "module": module_fields(node)}
        artifacts[node.key] = entry
        if node.recipe is not None:
            if node.recipe.name not in recipes:
                recipes[node.recipe.name] = recipe_entry(node.recipe, base_dir)
            sources.setdefault(f"{node.name}/{node.version}",
                               {**_source_entry(node.source, base_dir), **node.doc["source"]})
    host_packages = {}
    for tc in host.toolchains.values():
        for pkg in (tc.host_packages() if tc else []):
            host_packages[pkg.name] = {"kind": pkg.kind, "version": pkg.version, "id": pkg.aid,
                                       "identity": pkg.identity}
    toolchains = {name: ({"compiler": tc.compiler.name, "mpi": tc.mpi.name if tc.mpi else None} if tc else None)
                  for name, tc in host.toolchains.items()}
    profiles = {name: list(spec.packages) for name, spec in config.profiles.items()}
    return {
        "format": FORMAT,
        "sitedist": {"version": __version__, "protocols": protocols()},
        "config": os.path.relpath(os.path.abspath(config.path), base_dir),
        "host": {"packages": host_packages, "toolchains": toolchains, "targets": list(plan.targets),
                 "python": platform.python_version()},
        "recipes": recipes,
        "sources": sources,
        "profiles": profiles,
        "artifacts": artifacts,
    }


def digest(lock):
    """A digest of everything a lock says. The documents enter through the ids that hash them (a lock
    read with :func:`loads` has ids that match its documents), which keeps this fast."""
    light = dict(lock, artifacts={k: {f: v for f, v in e.items() if f != "doc"} for k, e in lock["artifacts"].items()})
    return hashlib.sha256(json.dumps(light, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def dumps(lock):
    """The text of a lock: sorted keys, one value per line, a final newline."""
    return json.dumps(lock, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write(path, lock):
    """Write ``lock`` to ``path`` by rename; False (nothing written) when the file already says the same."""
    text = dumps(lock)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    write_atomic(path, text)
    return True


# --- reading and checking a lock -----------------------------------------------------------------

def _no_float(text):
    raise ValueError(f"a number with a fraction or exponent ({text}): hashed documents hold none")


REGENERATE = "regenerate it with 'sitedist lock CONFIG', or restore it from version control (git checkout -- FILE)"


def _line_of(text, needle, start=0):
    at = text.find(needle, start)
    return 1 if at < 0 else text.count("\n", 0, at) + 1


def loads(text, path):
    """Parse and check a lock: a truncated or unparsable file, a future format or protocol, a missing
    field, or an id that its document does not give is a ConfigError naming ``path`` and the line."""
    try:
        lock = json.loads(text, parse_float=_no_float)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        what = "is truncated" if not text.rstrip().endswith("}") else "is not valid JSON"
        raise ConfigError(f"lock file {what} ({getattr(exc, 'msg', exc)})", where=f"{path}:{line}",
                          hint=REGENERATE) from None
    if not isinstance(lock, dict):
        raise ConfigError("a lock file must be a JSON object", where=f"{path}:1", hint=REGENERATE)

    def fail(message, needle, hint=REGENERATE):
        raise ConfigError(message, where=f"{path}:{_line_of(text, needle)}", hint=hint)

    fmt = lock.get("format")
    if not isinstance(fmt, int):
        fail("not a sitedist lock file (no 'format' number)", '"format"')
    if fmt > FORMAT:
        fail(f"lock file format {fmt} is newer than this sitedist understands (format {FORMAT})", '"format"',
             hint="upgrade sitedist to the version that wrote it")
    ours = protocols()
    theirs = (lock.get("sitedist") or {}).get("protocols")
    if not isinstance(theirs, dict):
        fail("the lock names no 'sitedist: protocols'", '"sitedist"')
    for name, number in sorted(theirs.items()):
        if not isinstance(number, int) or name not in ours:
            fail(f"unknown protocol '{name}' in the lock: written by another sitedist "
                 f"({lock['sitedist'].get('version')})", f'"{name}"', hint="upgrade sitedist")
        if number > ours[name]:
            fail(f"the lock was written with {name} protocol {number} by sitedist "
                 f"{lock['sitedist'].get('version')}; this sitedist ({_version()}) knows {name} protocol "
                 f"{ours[name]}", f'"{name}"', hint="upgrade sitedist to read this lock")
    artifacts = lock.get("artifacts")
    if not isinstance(artifacts, dict):
        fail("the lock has no 'artifacts'", '"artifacts"')
    ids = set()
    for key, entry in artifacts.items():
        needle = f'"{key}": {{'
        if not isinstance(entry, dict) or not all(k in entry for k in ("name", "version", "id", "kind", "doc")):
            fail(f"artifact {key}: needs name, version, id, kind and doc", needle)
        if not isinstance(entry["doc"], dict):
            fail(f"artifact {key}: 'doc' must be an object", needle)
        recomputed = artifact_id(entry["doc"], checked=False)  # JSON: string keys; floats refused above
        if recomputed != entry["id"]:
            fail(f"artifact {key}: id {entry['id']} does not match its document (which hashes to {recomputed}); "
                 f"the lock was edited by hand", needle)
        if key != f"{entry['name']}/{entry['version']}-{entry['id']}":
            fail(f"artifact {key}: the key does not match its name, version and id", needle)
        ids.add((entry["name"], entry["id"]))
    for key, entry in artifacts.items():
        for kind, deps in (entry["doc"].get("depends") or {}).items():
            for dep, aid in deps.items():
                if (dep, aid) not in ids:
                    fail(f"artifact {key}: its {kind} dependency {dep} {aid} is not in the lock", f'"{key}": {{')
    for section in ("recipes", "sources", "host", "profiles"):
        lock.setdefault(section, {})
    return lock


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"lock file not found: {path}", hint="write one with 'sitedist lock CONFIG'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the lock file: {exc}", where=path) from None
    return loads(text, path)


def _version():
    from sitedist import __version__

    return __version__


# --- comparing two locks -------------------------------------------------------------------------

@dataclass
class Change:
    status: str                  # 'added' | 'removed' | 'changed'
    label: str                   # 'libpng 1.6.39' (+ ' (toolchain)')
    old: dict = None             # the artifact entries
    new: dict = None
    reasons: list = field(default_factory=list)   # one line each; details indented under them

    def line(self):
        if self.status == "added":
            return f"{self.label}: added ({self.new['id']})"
        if self.status == "removed":
            return f"{self.label}: removed ({self.old['id']})"
        return f"{self.label}: id changed {self.old['id']} -> {self.new['id']}"

    def summary(self):
        """One line: 'libpng 1.6.39: id changed: compiler gcc 12.2.0 -> 12.3.0; ...'."""
        if self.status != "changed":
            return self.line()
        return f"{self.label}: id changed: " + "; ".join(r for r in self.reasons if not r.startswith("  "))


def label(entry):
    tc = entry.get("toolchain")
    text = f"{entry['name']} {entry['version']}"
    return text + (f" ({tc})" if tc and tc != "default" else "")


def slot(entry):
    """Which builds of two locks are the same build: name, kind, toolchain and target."""
    return (entry["name"], entry["kind"], entry.get("toolchain"), entry.get("target"))


def pairs(old, new):
    """[(old entry or None, new entry or None)] matching the builds of two locks."""
    groups = {}
    for side, lock in ((0, old), (1, new)):
        for key in sorted(lock["artifacts"]):
            entry = lock["artifacts"][key]
            groups.setdefault(slot(entry), ([], []))[side].append(entry)
    out = []
    for key in sorted(groups, key=lambda s: tuple("" if v is None else str(v) for v in s)):
        a, b = groups[key]
        same = {e["id"] for e in a} & {e["id"] for e in b}
        a_rest = [e for e in a if e["id"] not in same]
        b_rest = [e for e in b if e["id"] not in same]
        out += [(e, e) for e in a if e["id"] in same]
        for i in range(max(len(a_rest), len(b_rest))):
            out.append((a_rest[i] if i < len(a_rest) else None, b_rest[i] if i < len(b_rest) else None))
    return out


def compare(old, new):
    """[Change] for every build that was added, removed or whose id changed, with the reasons."""
    changes = []
    for a, b in pairs(old, new):
        if a is not None and b is not None and a["id"] == b["id"]:
            continue
        if a is None:
            changes.append(Change("added", label(b), new=b))
        elif b is None:
            changes.append(Change("removed", label(a), old=a))
        else:
            changes.append(Change("changed", label(b), old=a, new=b, reasons=explain(a, b, old, new)))
    return changes


def _short(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and len(value) >= 40 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "none" if value is None else str(value)


def _ident(identity):
    if not identity:
        return "none"
    return f"{identity.get('name')} {identity.get('version')}"


def _identity_reasons(what, a, b):
    """'compiler gcc 12.2.0 -> 12.3.0', or the identity fields that differ."""
    if not a or not b or a.get("name") != b.get("name"):
        return [f"{what} {_ident(a)} -> {_ident(b)}"]
    if a.get("version") != b.get("version"):
        return [f"{what} {a['name']} {a.get('version')} -> {b.get('version')}"]
    return [f"{what} {a['name']} {a['version']}: {k} {_short(a.get(k))} -> {_short(b.get(k))}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _by_id(lock):
    return {(e["name"], e["id"]): e for e in lock["artifacts"].values()}


def explain(a, b, old_lock, new_lock, depth=1):
    """Why build ``a`` of ``old_lock`` became ``b`` of ``new_lock``: one line per input that differs;
    a dependency whose id changed is explained ``depth`` levels down, indented."""
    da, db = a["doc"], b["doc"]
    reasons = []
    # The package's own inputs first, its dependencies last.
    for key in sorted(set(da) | set(db), key=lambda k: (k == "depends", k)):
        va, vb = da.get(key), db.get(key)
        if va == vb:
            continue
        if key == "protocol":
            reasons.append(f"sitedist hash protocol {va} -> {vb}")
        elif key == "builder":
            reasons.append(f"sitedist builder protocol {va} -> {vb}")
        elif key == "version":
            reasons.append(f"version {va} -> {vb}")
        elif key == "source":
            for k in sorted(set(va or {}) | set(vb or {})):
                if (va or {}).get(k) != (vb or {}).get(k):
                    reasons.append(f"source {k} {_short((va or {}).get(k))} -> {_short((vb or {}).get(k))}")
        elif key == "patches":
            reasons.append(f"patches {len(va or [])} -> {len(vb or [])}" if len(va or []) != len(vb or [])
                           else "patch content changed")
        elif key == "script":
            reasons += _script_reasons(a, b, old_lock, new_lock)
        elif key == "options":
            for k in sorted(set(va or {}) | set(vb or {})):
                if (va or {}).get(k, "-") != (vb or {}).get(k, "-"):
                    reasons.append(f"option {k} {_short((va or {}).get(k))} -> {_short((vb or {}).get(k))}")
        elif key == "toolchain":
            for part in ("compiler", "mpi"):
                pa, pb = (va or {}).get(part), (vb or {}).get(part)
                if pa != pb:
                    reasons += _identity_reasons(part, pa, pb)
        elif key == "identity":
            reasons += _identity_reasons(a["kind"], va, vb)
        elif key == "target":
            reasons.append(f"target {va} -> {vb}")
        elif key == "depends":
            reasons += _depends_reasons(va or {}, vb or {}, old_lock, new_lock, depth)
        else:
            reasons.append(f"{key} {_short(va)} -> {_short(vb)}")
    return reasons


def _script_reasons(a, b, old_lock, new_lock):
    ra = old_lock.get("recipes", {}).get(a.get("recipe") or "", {})
    rb = new_lock.get("recipes", {}).get(b.get("recipe") or "", {})
    ka, kb = ra.get("keys", {}), rb.get("keys", {})
    keys = [k for k in sorted(set(ka) | set(kb)) if ka.get(k) != kb.get(k) and k not in ("versions", "description",
                                                                                           "homepage", "env")]
    out = [f"recipe changed: {', '.join(keys)}" if keys else "build script changed"]
    diff = difflib.unified_diff(a["doc"]["script"].splitlines(), b["doc"]["script"].splitlines(), lineterm="", n=0)
    out += [f"  {line}" for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return out


def _depends_reasons(va, vb, old_lock, new_lock, depth):
    out = []
    old_ids, new_ids = _by_id(old_lock), _by_id(new_lock)
    for kind in sorted(set(va) | set(vb)):
        da, db = va.get(kind, {}), vb.get(kind, {})
        for dep in sorted(set(da) | set(db)):
            if da.get(dep) == db.get(dep):
                continue
            if dep not in da:
                out.append(f"new {kind} dependency {dep}")
            elif dep not in db:
                out.append(f"no longer a {kind} dependency: {dep}")
            else:
                ea, eb = old_ids.get((dep, da[dep])), new_ids.get((dep, db[dep]))
                why = [r for r in explain(ea, eb, old_lock, new_lock, depth - 1) if not r.startswith("  ")] \
                    if depth > 0 and ea and eb else []
                out.append(f"{kind} dependency {dep} changed ({'; '.join(why)})" if why else
                           f"{kind} dependency {dep} changed {da[dep]} -> {db[dep]}")
    return out


def lines(changes, details=True):
    """Text of a comparison: one line per package, reasons indented under it."""
    out = []
    for change in changes:
        out.append(change.line())
        if details:
            out += [f"    {r}" for r in change.reasons]
    return out


# --- a plan made from a lock ---------------------------------------------------------------------

@dataclass(eq=False)
class LockedToolchain:
    name: str


@dataclass(eq=False)
class LockedNode:
    """A build as a lock records it: what publishing a past lock needs (the names, ids, run
    dependencies and ``module`` fields), without its recipe."""
    name: str
    version: str
    aid: str
    kind: str
    target: str
    toolchain: object
    module: dict
    explicit: bool
    deps: dict = field(default_factory=dict)

    @property
    def key(self):
        return f"{self.name}/{self.version}-{self.aid}"

    @property
    def label(self):
        return label({"name": self.name, "version": self.version,
                      "toolchain": self.toolchain.name if self.toolchain else None})


@dataclass
class LockedPlan:
    nodes: list
    targets: list


def locked_plan(lock):
    """The plan a lock records, as LockedNodes in the lock's order (dependencies resolved by id)."""
    nodes = {}
    for key in sorted(lock["artifacts"]):
        e = lock["artifacts"][key]
        module = e.get("module") or {}
        nodes[(e["name"], e["id"])] = LockedNode(
            name=e["name"], version=e["version"], aid=e["id"], kind=e["kind"], target=e.get("target") or "",
            toolchain=LockedToolchain(e["toolchain"]) if e.get("toolchain") else None, module=module,
            explicit=bool(module.get("explicit", True)))
    for key in sorted(lock["artifacts"]):
        e = lock["artifacts"][key]
        node = nodes[(e["name"], e["id"])]
        for kind, deps in (e["doc"].get("depends") or {}).items():
            node.deps[kind] = [nodes[(d, aid)] for d, aid in sorted(deps.items())]
        python = e["doc"].get("python")
        if python:   # a Python package's Python: a recipe's by id, the host's by identity
            node.deps["python"] = [n for (name, aid), n in nodes.items()
                                   if (name, aid) == (python.get("name"), python.get("id"))
                                   or (n.kind == "python" and lock["artifacts"][n.key]["doc"].get("identity") == python)]
    targets = list(lock.get("host", {}).get("targets") or sorted({n.target for n in nodes.values() if n.target}))
    return LockedPlan(nodes=list(nodes.values()), targets=targets)
