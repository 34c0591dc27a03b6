"""Planning a module tree: where each entry's modulefile goes and under which name. Pure: writes nothing.

Flat layout: every module at ``<name>/<version>``. Hierarchical layout (Lmod's Core / Compiler / MPI):
- compiler modules and packages built with the default toolchain go to ``Core``; a compiler module opens
  ``Compiler/<compiler>/<major.minor>``;
- packages built with a compiler go to its Compiler level; MPI modules too (an MPI host package, built
  with no particular compiler, appears at the level of every compiler that packages were built with
  together with it; when nothing was built with it, under every compiler); an MPI module opens
  ``MPI/<compiler>/<major.minor>/<mpi>/<major.minor>``, where packages built with both go.

Two entries that would get the same module name are told apart by the ``modules.disambiguate`` rules, in
order, each applied only where it tells the clashing entries apart; what cannot be told apart is an error
that names every entry involved and the rule that would fix it.
"""

import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import jinja2

from sitedist.core.versions import is_prerelease, newest, version_key
from sitedist.errors import ModulesError
from sitedist.modules.entry import ModuleEntry

KINDS = ("package", "compiler", "mpi", "cuda", "python")
RULES = ("toolchain", "options", "hash")
ENV_OPS = ("set", "prepend", "append")
DEFAULT_NAMING = "{{name}}/{{version}}"
_COMPONENT = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none"}


class PlannedModule(NamedTuple):
    """Where one entry's modulefile goes. A named tuple, not a frozen dataclass: a 10,000-module plan makes
    10,000 of them per publish, and a tuple is made in a fifth of the time."""
    entry: ModuleEntry
    level: str            # '' (flat), 'Core', 'Compiler/gcc/12.2', 'MPI/gcc/12.2/openmpi/4.1'
    name: str             # module name, e.g. 'zlib'
    version: str          # module version, e.g. '1.2.13' or '1.2.13-gcc-openmpi'
    opens: str = ""       # the level this module adds to MODULEPATH (compiler and MPI modules)
    family: str = ""      # 'compiler' | 'mpi' | 'cuda' | 'python' | ''
    requires: tuple = ()  # module names of the hierarchy parents (compiler, MPI) that must be loaded
    depends: tuple = ()   # full names of the modules it loads
    hidden: bool = False

    @property
    def fullname(self):
        return f"{self.name}/{self.version}"

    @property
    def relpath(self):
        """Path of the modulefile in a tree, without the format's extension."""
        return f"{self.level}/{self.name}/{self.version}" if self.level else f"{self.name}/{self.version}"


@dataclass
class TreePlan:
    layout: str
    modules: list                                  # PlannedModule, sorted by relpath
    defaults: dict = field(default_factory=dict)   # (level, name) -> version
    levels: tuple = ()                             # every level directory, including empty ones
    notes: list = field(default_factory=list)      # human-readable: how clashes were resolved

    @property
    def roots(self):
        """Levels users put in MODULEPATH: '' (the tree itself) or 'Core'."""
        return ("Core",) if self.layout == "hierarchical" else ("",)

    def prefixes(self):
        return {m.entry.prefix for m in self.modules}

    def rc_dirs(self):
        """(level, name) -> (default fullname or None, sorted hidden fullnames) for every name with either."""
        hidden = defaultdict(list)
        for m in self.modules:
            if m.hidden:
                hidden[(m.level, m.name)].append(m.fullname)
        keys = sorted(set(hidden) | set(self.defaults))
        return {k: (f"{k[1]}/{self.defaults[k]}" if k in self.defaults else None, sorted(hidden.get(k, ())))
                for k in keys}


def majmin(version):
    return ".".join(version.split(".")[:2])


def plan_tree(entries, config):
    """Plan the tree for ``entries`` under the (validated) modules ``config``; raise ModulesError on an
    unresolvable name clash, an invalid name, or a dependency the tree cannot reach."""
    layout = config.get("layout", "flat")
    rules = list(config.get("disambiguate") or ())
    for rule in rules:
        if rule not in RULES:
            raise ModulesError(f"modules.disambiguate: unknown rule {rule!r}; use {', '.join(RULES)}")
    entries = _unique(entries)
    for e in entries:
        if e.kind not in KINDS:
            raise ModulesError(f"module entry {e.describe()}: unknown kind {e.kind!r}")
        if not e.prefix.startswith("/"):
            raise ModulesError(f"module entry {e.describe()}: prefix {e.prefix!r} is not absolute")
        _check_env(e)
    namer = _namer(config.get("naming") or DEFAULT_NAMING)
    placements = _place(entries) if layout == "hierarchical" else [(e, "", "") for e in entries]
    slots = [[e, level, opens, *namer(e)] for e, level, opens in placements]
    notes = _disambiguate(slots, rules)
    _check_paths(slots)

    by_aid = defaultdict(list)
    for e, level, opens, name, version in slots:
        by_aid[e.artifact_id].append((level, name, version))
    compiler_names = {(e.name, e.version): name for e, level, opens, name, version in slots if e.kind == "compiler"}
    mpi_names = {(e.name, e.version): name for e, level, opens, name, version in slots if e.kind == "mpi"}
    hide = config.get("hide_implicit", True)
    modules = []
    for e, level, opens, name, version in slots:
        requires = ()
        if layout == "hierarchical":
            requires = tuple(n for n in (compiler_names.get(e.compiler) if level != "Core" else None,
                                         mpi_names.get(e.mpi) if level.startswith("MPI/") else None) if n)
            if e.kind == "mpi" and level.startswith("Compiler/"):
                requires = tuple(n for k, n in compiler_names.items() if _compiler_level(k) == level)[:1]
        modules.append(PlannedModule(
            entry=e, level=level, name=name, version=version, opens=opens,
            family=e.kind if e.kind != "package" else "", requires=requires,
            depends=_depends(e, level, by_aid) if e.run_depends else (), hidden=hide and not e.explicit))
    modules.sort(key=lambda m: m.relpath)
    levels = sorted({m.level for m in modules} | {m.opens for m in modules if m.opens}
                    | ({"Core"} if layout == "hierarchical" else {""}))
    defaults = _defaults(modules, config.get("defaults") or {})
    return TreePlan(layout=layout, modules=modules, defaults=defaults, levels=tuple(levels), notes=notes)


def _unique(entries):
    """The entries once each, sorted; an artifact given twice is one module (explicit if either is)."""
    by_aid = {}
    for e in entries:
        seen = by_aid.setdefault(e.artifact_id, e)
        if seen is not e and seen != e:
            if replace(seen, explicit=True) != replace(e, explicit=True):
                raise ModulesError(f"artifact {e.artifact_id} is given twice with different module data: "
                                   f"{seen.describe()} / {e.describe()}")
            by_aid[e.artifact_id] = replace(e, explicit=True)
    return sorted(by_aid.values(), key=lambda e: (e.name, e.version, e.artifact_id))


def _check_env(e):
    for op, var, _ in e.env:
        if op not in ENV_OPS or not _VAR.fullmatch(var):
            raise ModulesError(f"{e.describe()}: bad env entry ({op!r}, {var!r}); op must be one of "
                               f"{', '.join(ENV_OPS)} and the variable a shell variable name")
        if var == "LD_LIBRARY_PATH":
            raise ModulesError(f"{e.describe()}: its recipe sets LD_LIBRARY_PATH; artifacts find their "
                               "libraries by RPATH, so modules never set it. Remove it from the recipe's env")


def _namer(template):
    if template == DEFAULT_NAMING:
        return lambda e: (e.name, e.version)
    try:
        compiled = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise ModulesError(f"modules.naming {template!r} is not a valid template: {err}") from None

    def name(e):
        try:
            text = compiled.render(
                name=e.name, version=e.version, kind=e.kind, toolchain=e.toolchain,
                compiler=e.compiler[0] if e.compiler else "", compiler_version=e.compiler[1] if e.compiler else "",
                mpi=e.mpi[0] if e.mpi else "", mpi_version=e.mpi[1] if e.mpi else "",
                options=dict(e.options), hash=e.artifact_id[:7], artifact_id=e.artifact_id).strip()
        except jinja2.TemplateError as err:
            raise ModulesError(f"modules.naming {template!r} fails for {e.describe()}: {err}") from None
        head, _, tail = text.rpartition("/")
        if not head or not all(_COMPONENT.fullmatch(c) for c in text.split("/")):
            raise ModulesError(
                f"modules.naming {template!r} gives {text!r} for {e.describe()}: a module name must be "
                "NAME/VERSION (NAME may hold '/'), each part letters, digits and '._+-' not starting with '.' "
                "or '-'")
        return head, tail
    return name


def _compiler_level(compiler):
    return f"Compiler/{compiler[0]}/{majmin(compiler[1])}"


def _mpi_level(compiler, mpi):
    return f"MPI/{compiler[0]}/{majmin(compiler[1])}/{mpi[0]}/{majmin(mpi[1])}"


def _place(entries):
    """Hierarchical placement: [(entry, level, opens)]."""
    compilers = {(e.name, e.version) for e in entries if e.kind == "compiler"}
    mpis = {(e.name, e.version) for e in entries if e.kind == "mpi"}
    paired = defaultdict(set)
    for e in entries:
        if e.kind == "package" and e.mpi and e.compiler:
            paired[e.mpi].add(e.compiler)
    out = []
    for e in entries:
        if e.kind == "compiler":
            out.append((e, "Core", _compiler_level((e.name, e.version))))
        elif e.kind in ("cuda", "python"):
            # The CUDA toolkit works with any host compiler: Core, where users look for 'cuda'. Packages
            # built with it stay at their compiler (or MPI) level and load it (admin_docs/gpu.md).
            out.append((e, "Core", ""))
        elif e.kind == "mpi":
            me = (e.name, e.version)
            if e.compiler and e.compiler not in compilers:
                raise ModulesError(f"MPI {e.describe()} was built with compiler {' '.join(e.compiler)}, which "
                                   "has no module: the hierarchical layout could not make it visible")
            under = [e.compiler] if e.compiler else sorted(paired.get(me) or compilers)
            if not under:
                out.append((e, "Core", ""))
            out.extend((e, _compiler_level(c), _mpi_level(c, me)) for c in under)
        elif e.mpi and not e.compiler:
            raise ModulesError(f"module entry {e.describe()} has an MPI but no compiler; the hierarchical "
                               "layout needs both to place it")
        else:
            if e.compiler and e.compiler not in compilers:
                raise ModulesError(
                    f"{e.describe()} was built with compiler {' '.join(e.compiler)}, which has no module: "
                    "the hierarchical layout could not make it visible")
            if e.mpi and e.mpi not in mpis:
                raise ModulesError(
                    f"{e.describe()} was built with MPI {' '.join(e.mpi)}, which has no module: "
                    "the hierarchical layout could not make it visible")
            level = "Core" if not e.compiler else (_mpi_level(e.compiler, e.mpi) if e.mpi
                                                    else _compiler_level(e.compiler))
            out.append((e, level, ""))
    return out


def _suffix(rule, entry, group):
    if rule == "toolchain":
        return f"-{entry.toolchain}" if entry.toolchain else ""
    if rule == "hash":
        return f"-{entry.artifact_id[:7]}"
    opts = [dict(e.options) for e in group]
    keys = sorted({k for o in opts for k in o if len({str(x.get(k)) for x in opts}) > 1})
    mine = dict(entry.options)
    parts = []
    for k in keys:
        value = mine.get(k)
        if value is None:
            continue
        low = str(value).lower()
        parts.append(k if low in _TRUE else f"no{k}" if low in _FALSE else str(value))
    return "".join("-" + re.sub(r"[^A-Za-z0-9._+]", "_", p) for p in parts)


def _clashes(slots):
    groups = defaultdict(list)
    for slot in slots:
        groups[(slot[1], slot[3], slot[4])].append(slot)
    return [g for g in groups.values() if len(g) > 1]


def _disambiguate(slots, rules):
    """Apply the rules to clashing groups in place; return notes; raise on what remains."""
    notes = []
    pending = _clashes(slots)
    if not pending:
        return notes
    for rule in rules:
        still = []
        for group in pending:
            suffixes = [_suffix(rule, s[0], [t[0] for t in group]) for s in group]
            if len(set(suffixes)) == 1:
                still.append(group)
                continue
            before = f"{group[0][3]}/{group[0][4]}"
            for slot, suffix in zip(group, suffixes):
                slot[4] += suffix
            notes.append(f"{len(group)} artifacts would be module {before}"
                         f"{' in ' + group[0][1] if group[0][1] else ''}; told apart by rule {rule!r}: "
                         + "; ".join(f"{s[3]}/{s[4]} ({s[0].describe()})" for s in group))
            still.extend(_clashes(group))
        pending = still
    pending = _clashes(slots)
    if pending:
        raise ModulesError("\n".join(_clash_message(g, rules) for g in pending)
                           + "\nNothing was written; the published module tree is unchanged.")
    return notes


def _clash_message(group, rules):
    entries = [s[0] for s in group]
    fixing = [r for r in RULES if len({_suffix(r, e, entries) for e in entries}) == len(entries)]
    where = f" (in {group[0][1]})" if group[0][1] else ""
    lines = [f"module name clash: {len(group)} artifacts would all be module {group[0][3]}/{group[0][4]}{where}:"]
    lines += [f"  - {e.describe()}" for e in entries]
    tried = f"modules.disambiguate {rules} does not tell them apart; " if rules else ""
    if fixing:
        lines.append(f"  hint: {tried}add {' or '.join(repr(r) for r in fixing)} to modules.disambiguate "
                     f"(e.g. 'disambiguate: [{fixing[0]}]'), or change modules.naming")
    else:
        lines.append(f"  hint: {tried}no rule tells them apart; change modules.naming")
    return "\n".join(lines)


def _check_paths(slots):
    """A module name may not be a directory of another one (e.g. 'a/1' and 'a/1/b')."""
    files = {f"{s[1]}/{s[3]}/{s[4]}" if s[1] else f"{s[3]}/{s[4]}" for s in slots}
    for e, level, _, name, version in slots:
        path = f"{level}/{name}" if level else name
        if "/" not in name and path not in files:   # the common case: the loop below would stop here
            continue
        while path != level:
            if path in files:
                raise ModulesError(f"module {name}/{version} ({e.describe()}) would be inside module {path!r}; "
                                   "change modules.naming so that no module name is a prefix of another")
            path = posixpath.dirname(path)


def _reachable(level):
    """Levels whose modules a module at ``level`` can load (None: all, in the flat layout)."""
    if not level:
        return None
    if level == "Core":
        return {"Core"}
    parts = level.split("/")
    return {"Core", "/".join(["Compiler"] + parts[1:3]), level}


def _depends(entry, level, by_aid):
    reach = _reachable(level)
    out = []
    for name, version, aid in entry.run_depends:
        placed = [p for p in by_aid.get(aid, ()) if reach is None or p[0] in reach]
        if not placed:
            if aid in by_aid:
                raise ModulesError(
                    f"{entry.describe()} (module level {level}) must load {name} {version}, which is only at "
                    f"{', '.join(sorted(p[0] for p in by_aid[aid]))}: users could not load it")
            raise ModulesError(f"{entry.describe()} must load {name} {version} (artifact {aid}), which is not "
                               "among the modules to publish")
        out.append(f"{placed[0][1]}/{placed[0][2]}")
    return tuple(out)


def _defaults(modules, wanted):
    by_name = defaultdict(list)
    for m in modules:
        by_name[m.name].append(m)
    out = {}
    for name, version in sorted(wanted.items()):
        candidates = by_name.get(name)
        if not candidates:
            raise ModulesError(f"modules.defaults names {name!r}, which is not a module; modules are: "
                               + ", ".join(sorted(by_name)[:20]))
        per_level = defaultdict(list)
        for m in candidates:
            per_level[m.level].append(m)
        found = False
        for level, ms in sorted(per_level.items()):
            exact = [m for m in ms if m.version == version] or [m for m in ms if m.entry.version == version]
            if len(exact) > 1:
                raise ModulesError(f"modules.defaults: {name}: {version} matches "
                                   + ", ".join(m.fullname for m in exact) + "; name one of these versions")
            if exact:
                out[(level, name)] = exact[0].version
                found = True
        if not found:
            raise ModulesError(f"modules.defaults: {name}: {version} is not a version of module {name}; "
                               "versions are: " + ", ".join(sorted({m.version for m in candidates}, key=version_key)))
    # Lmod and Environment Modules each order versions their own way, and may make a release candidate
    # the default: where a module has a pre-release among its versions and no configured default,
    # name the newest by sitedist's order (sitedist.core.versions).
    groups = defaultdict(list)
    for m in modules:
        groups[(m.level, m.name)].append(m)
    pre = {v: is_prerelease(v) for v in {m.entry.version for m in modules}}   # few distinct versions
    for key, ms in sorted(groups.items()):
        if key not in out and len(ms) > 1 and any(pre[m.entry.version] for m in ms):
            best = newest(ms, key=lambda m: m.entry.version).entry.version
            out[key] = max((m for m in ms if m.entry.version == best), key=lambda m: version_key(m.version)).version
    return out
