"""Profiles: symlink forests over artifacts, published in generations and switched by one rename.

Layout of a profile whose root is ``R`` (default ``<store>/../profiles/<name>``)::

    R -> .<name>-generations/<N>                the profile users put on PATH; switched by one rename
    <dir of R>/.<name>-generations/
        <N>/bin/, lib/, include/, share/ ...    generation N: real directories, every file a symlink
                                                to the same file in an artifact
        <N>/.sitedist/profile.json              what N holds: packages, artifact prefixes (a GC root),
                                                files the 'prefer' rule shadowed
        .staging-<N>-<pid>/                     a generation being written (its record first)
        .lock                                   held while publishing, switching or pruning

Generations are written, flushed to disk and switched by ``sitedist.core.generations.Generations``, the
protocol module trees use too.

With more than one CPU target, each target has its own forest at ``R/<target>``.

A profile holds the packages it lists and, transitively, their run dependencies (link dependencies
are found by RUNPATH and are not needed in the forest). Two artifacts providing one path with different
content is a conflict: ``conflicts: error`` (the default) stops the publish before anything is switched;
``conflicts: prefer`` with ``prefer: [a, b]`` lets the earlier name win and reports what it shadowed.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field

from sitedist.core.generations import Generations
from sitedist.core.gcroots import register_tree
from sitedist.core.locks import StoreLock
from sitedist.errors import ConfigError, ProfileError

RECORD = os.path.join(".sitedist", "profile.json")
SHOWN = 10   # conflicts or shadowed files listed in a message; the rest are counted


@dataclass(frozen=True)
class Member:
    """One artifact in a profile."""
    name: str
    label: str      # "libpng 1.6.39"
    prefix: str


@dataclass
class ProfilePlan:
    name: str
    root: str
    members: list
    links: dict                 # relative path -> absolute path in an artifact
    dirs: list                  # relative directories, parents first
    shadowed: list              # (path, winner label, loser label)
    inputs: str                 # digest: equal inputs give an equal forest


@dataclass
class ProfileResult:
    name: str
    root: str
    generation: int
    changed: bool
    packages: int
    shadowed: list = field(default_factory=list)
    pruned: list = field(default_factory=list)

    def __str__(self):
        text = (f"{self.name}: generation {self.generation} at {self.root} ({self.packages} artifacts"
                + ("" if self.changed else ", unchanged") + ")")
        if self.shadowed:
            shown = "; ".join(f"{path}: {win} over {lose}" for path, win, lose in self.shadowed[:SHOWN])
            more = f" and {len(self.shadowed) - SHOWN} more" if len(self.shadowed) > SHOWN else ""
            text += f"; shadowed by 'prefer': {shown}{more}"
        return text


@dataclass
class ProfileGeneration:
    number: int
    path: str
    created: float
    current: bool
    packages: list
    prefixes: list


# --- paths --------------------------------------------------------------------------------------

def generations_dir(root):
    root = os.path.abspath(root)
    return os.path.join(os.path.dirname(root), f".{os.path.basename(root)}-generations")


def profile_roots(spec, targets):
    """[(root, target)] of a profile: one forest, or one per CPU target when there are several."""
    if len(targets) > 1:
        return [(os.path.join(spec.root, t), t) for t in targets]
    return [(spec.root, targets[0] if targets else None)]


def _generations(root):
    return Generations(generations_dir(root), root, RECORD, read_record)


def current_generation(root):
    return _generations(root).current()


def read_record(gen_dir):
    try:
        with open(os.path.join(gen_dir, RECORD), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{os.path.join(gen_dir, RECORD)} is unreadable ({exc}): remove generation "
                           f"{gen_dir} and publish again") from None


def _lock(root, what):
    gens = generations_dir(root)
    os.makedirs(gens, exist_ok=True)
    return StoreLock(os.path.join(gens, ".lock"), what=what)


# --- selecting the artifacts ----------------------------------------------------------------------

def select_members(spec, plan, prefixes, target):
    """The artifacts of profile ``spec`` for ``target``: its packages in order, then their run
    dependencies. An entry is ``NAME`` or ``NAME%TOOLCHAIN``; ConfigError (at the profile) if it names
    nothing in the plan or more than one build."""
    members, seen = [], set()

    def add(node):
        if node.key in seen:
            return
        seen.add(node.key)
        members.append(Member(name=node.name, label=node.label, prefix=prefixes[node.key]))
        for dep in node.deps.get("run", []) + node.deps.get("python", []):   # a Python package: its Python too
            add(dep)

    for entry in spec.packages:
        name, _, toolchain = entry.partition("%")
        named = [n for n in plan.nodes if n.name == name and (n.kind != "package" or n.target == target)]
        if not named:
            raise ConfigError(f"profile {spec.name}: package '{name}' is not in the plan", where=spec.where,
                              hint="list it under 'packages:' (or as a dependency of one), or remove it from "
                                   f"the profile; the plan has: {', '.join(sorted({n.name for n in plan.nodes}))}")
        nodes = [n for n in named if not toolchain or (n.toolchain and n.toolchain.name == toolchain)]
        if len(nodes) != 1:
            builds = ", ".join(f"{n.label} [{n.aid}]" + (f" %{n.toolchain.name}" if n.toolchain else "")
                               for n in named)
            problem = f"no build of '{name}' uses toolchain '{toolchain}'" if not nodes else \
                f"'{entry}' names {len(nodes)} builds"
            raise ConfigError(f"profile {spec.name}: {problem} (the plan has: {builds})", where=spec.where,
                              hint="name one build as NAME%TOOLCHAIN, e.g. "
                                   f"{name}%{(named[0].toolchain.name if named[0].toolchain else 'default')}")
        add(nodes[0])
    return members


def check_profiles(ctx):
    """Raise the ConfigError :func:`select_members` would, before anything is built (or on a dry run)."""
    for spec in ctx.config.profiles.values():
        for _, target in profile_roots(spec, ctx.plan.targets):
            select_members(spec, ctx.plan, ctx.prefixes, target)


# --- planning the forest ---------------------------------------------------------------------------

class _Merge:
    def __init__(self, conflicts, prefer):
        self.conflicts = conflicts
        self.prefer = list(prefer)
        self.links, self.dirs, self.shadowed, self.unresolved = {}, [], [], []
        self._manifests = {}

    def _content(self, member, rel):
        """The manifest entry of ``rel`` in ``member`` (sha256 and mode, or link target)."""
        if member not in self._manifests:
            try:
                with open(os.path.join(member.prefix, ".sitedist", "manifest.json"), encoding="utf-8") as f:
                    self._manifests[member] = json.load(f)["files"]
            except (OSError, ValueError, KeyError):
                self._manifests[member] = {}
        return self._manifests[member].get(rel)

    def _winner(self, candidates):
        if self.conflicts != "prefer":
            return None
        ranked = sorted((self.prefer.index(m.name), m) for m, _, _ in candidates if m.name in self.prefer)
        if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
            return None
        return ranked[0][1]

    def merge(self, rel, sources):
        """Merge directories ``sources`` [(member, abs dir)] at relative path ``rel``."""
        entries = {}
        for member, directory in sources:
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if rel or entry.name != ".sitedist":
                    is_dir = entry.is_dir(follow_symlinks=False)
                    entries.setdefault(entry.name, []).append((member, entry.path, is_dir))
        for name in sorted(entries):
            child = os.path.join(rel, name) if rel else name
            cands = entries[name]
            dirs = [(m, p) for m, p, is_dir in cands if is_dir]
            leaves = [(m, p) for m, p, is_dir in cands if not is_dir]
            if not leaves:
                self.dirs.append(child)
                self.merge(child, dirs)
                continue
            if len(cands) == 1:
                self.links[child] = leaves[0][1]
                continue
            contents = {json.dumps(self._content(m, child), sort_keys=True) for m, _ in leaves}
            if not dirs and len(contents) == 1 and "null" not in contents:
                self.links[child] = leaves[0][1]   # the same file in every artifact: no conflict
                continue
            winner = self._winner(cands)
            if winner is None:
                self.unresolved.append((child, [m for m, _, _ in cands]))
                continue
            dir_members = {m for m, _ in dirs}
            merged = dir_members if winner in dir_members else {winner}   # directories merge with the winner
            self.shadowed += [(child, winner.label, m.label) for m, _, _ in cands if m not in merged]
            if winner in dir_members:
                self.dirs.append(child)
                self.merge(child, dirs)
            else:
                self.links[child] = next(p for m, p in leaves if m == winner)


def plan_profile(spec, root, members):
    """The forest of ``members`` at ``root``; ProfileError naming every unresolved conflict and the fix."""
    merge = _Merge(spec.conflicts, spec.prefer)
    merge.merge("", [(m, m.prefix) for m in members])
    if merge.unresolved:
        lines = [f"{path}: " + " and ".join(f"{m.label} ({m.prefix})" for m in owners)
                 for path, owners in merge.unresolved]
        more = len(lines) - SHOWN
        names = []
        for _, owners in merge.unresolved:
            names += [m.name for m in owners if m.name not in names]
        rule = "'conflicts: prefer'" if spec.conflicts != "prefer" else "'prefer'"
        raise ProfileError(
            f"profile {spec.name}: {len(lines)} path(s) are provided by more than one package:\n  "
            + "\n  ".join(lines[:SHOWN]) + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\n  hint: {spec.where}: choose which package wins with {rule}, e.g. "
            f"'{spec.name}: {{packages: [...], conflicts: prefer, prefer: [{', '.join(names)}]}}' (the earlier "
            "name wins), or remove one of them from the profile. Nothing was switched.")
    digest = hashlib.sha256(json.dumps([[m.prefix for m in members], spec.conflicts, spec.prefer]).encode())
    return ProfilePlan(name=spec.name, root=os.path.abspath(root), members=members, links=merge.links,
                       dirs=merge.dirs, shadowed=merge.shadowed, inputs=digest.hexdigest())


# --- writing and switching ---------------------------------------------------------------------

def _switch(root, number):
    try:
        _generations(root).switch(number)
    except OSError as err:
        raise ProfileError(f"cannot switch {os.path.abspath(root)}: {err}; move it away and publish again") from None


def write_profile(plan, keep, config_path=None):
    """Write ``plan`` as a new generation and switch the root to it (or nothing, if the current
    generation has the same inputs); prune to the newest ``keep`` (and the current)."""
    root = plan.root
    generations = _generations(root)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    with _lock(root, f"publishing profile {plan.name}"):
        generations.remove_leftovers(all_staging=True)   # under the lock: no publisher is writing
        current = generations.current()
        record = read_record(generations.path(current)) if current else None
        if record and record.get("inputs") == plan.inputs:
            return ProfileResult(plan.name, root, current, False, len(plan.members), list(plan.shadowed))
        number, stage = generations.stage()
        try:
            generations.write_record(stage, {   # a GC root from now on
                "generation": number, "created": time.time(), "profile": plan.name, "config": config_path,
                "inputs": plan.inputs, "packages": [m.label for m in plan.members],
                "prefixes": [m.prefix for m in plan.members], "shadowed": plan.shadowed})
            for rel in plan.dirs:
                os.mkdir(os.path.join(stage, rel))
            for rel, target in plan.links.items():
                os.symlink(target, os.path.join(stage, rel))
            generations.commit(stage, number)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _switch(root, number)
        pruned = generations.prune(generations.select_pruned(keep=keep))
    return ProfileResult(plan.name, root, number, True, len(plan.members), list(plan.shadowed), pruned)


def publish_profiles(ctx):
    """Publish every profile of the synced config: plan them all (any conflict stops before anything is
    switched), then write and switch each. Called by sitedist.ops.publish after the modules."""
    plans = []
    for spec in ctx.config.profiles.values():
        for root, target in profile_roots(spec, ctx.plan.targets):
            plans.append((spec, plan_profile(spec, root, select_members(spec, ctx.plan, ctx.prefixes, target))))
    results = []
    for spec, plan in plans:
        results.append(write_profile(plan, spec.keep, ctx.config.path))
        register_tree(ctx.store, "profile", plan.root)
    return results


# --- generations -------------------------------------------------------------------------------

def list_generations(root):
    """The kept generations of the profile at ``root``, oldest first."""
    generations = _generations(root)
    current = generations.current()
    return [ProfileGeneration(number=n, path=path, created=record.get("created", 0.0), current=n == current,
                              packages=record.get("packages", []), prefixes=record.get("prefixes", []))
            for n, path, record in generations.records()]


def switch_generation(root, number):
    with _lock(root, f"switching profile {os.path.basename(root)}"):
        kept = _generations(root).numbers()
        if number not in kept:
            raise ProfileError(f"profile {root} has no generation {number}; kept: "
                               f"{', '.join(map(str, kept)) or 'none'}")
        _switch(root, number)
    return number


def rollback(root):
    """Switch to the generation before the current one; return its number."""
    current = current_generation(root)
    if current is None:
        raise ProfileError(f"no profile is published at {root}; nothing to roll back")
    number = _generations(root).previous(current)
    if number is None:
        raise ProfileError(f"generation {current} is the oldest kept of profile {root}; nothing to roll back to "
                           "(the profile's 'keep' sets how many generations are kept)")
    return switch_generation(root, number)


def select_pruned(root, keep=None, older_than=None, now=None):
    """Generation numbers a retention rule removes: not the current one, not among the newest ``keep``,
    and (with ``older_than``, in seconds) created longer ago than that. No rule: none."""
    return _generations(root).select_pruned(keep, older_than, now)


def prune(root, keep=None, older_than=None):
    """Remove the generations :func:`select_pruned` selects, under the profile's lock."""
    if keep is None and older_than is None:
        return []
    with _lock(root, f"pruning profile {os.path.basename(root)}"):
        generations = _generations(root)
        return generations.prune(generations.select_pruned(keep, older_than))


def exists(root):
    """Whether a profile is (or was being) published at ``root``: the GC keeps its registration."""
    return os.path.lexists(root) or os.path.isdir(generations_dir(root))


def live_prefixes(root, skip=()):
    """Artifact prefixes referenced by the kept generations (and one being written), except ``skip``."""
    generations = _generations(root)
    live, unknown = generations.referenced(skip)
    if unknown:
        raise ProfileError(f"profile generation {generations.path(unknown[0])} has no {RECORD}, so what it "
                           "references is unknown; remove that generation or publish again")
    return live
