"""Publishing: from a built plan to module entries and profiles, switched in atomically.

With more than one CPU target, each target gets its own module tree under ``<modules.root>/<target>``
(the way sites with skylake and zen3 partitions point each partition's MODULEPATH at its own tree).
"""

import os

from sitedist.core.gcroots import register_tree
from sitedist.core.locks import StoreLock
from sitedist.core.store import Store
from sitedist.modules import ModuleEntry, plan_tree, publish
from sitedist.profiles import publish_profiles
from sitedist.spec import lock as locks


def module_entry(node, prefix):
    """The ModuleEntry of a node (resolved, or of a lock) whose artifact is at ``prefix``."""
    try:
        subdirs = tuple(Store.read_marker(prefix).get("subdirs", ()))
    except (OSError, ValueError):
        subdirs = ()
    f = locks.module_fields(node)
    return ModuleEntry(name=node.name, version=node.version, prefix=prefix, artifact_id=node.aid, kind=f["kind"],
                       description=f["description"], homepage=f["homepage"],
                       compiler=tuple(f["compiler"]) if f["compiler"] else None,
                       mpi=tuple(f["mpi"]) if f["mpi"] else None, toolchain=f["toolchain"],
                       options=tuple(map(tuple, f["options"])), run_depends=tuple(map(tuple, f["run_depends"])),
                       env=tuple(map(tuple, f["env"])), subdirs=subdirs, explicit=f["explicit"],
                       link_depends=tuple(map(tuple, f.get("link_depends", ()))),   # absent from older locks
                       keywords=tuple(f.get("keywords", ())))


def _entry(ctx, node):
    return module_entry(node, ctx.prefixes[node.key])


def module_entries(ctx, target=None):
    # Host build tools (cmake, make, ...) get no module: users have their own; a tool built from a recipe
    # is a package like any other.
    return [_entry(ctx, n) for n in ctx.plan.nodes
            if n.kind != "tool" and (n.kind != "package" or target is None or n.target == target)]


def module_configs(ctx):
    """[(target, modules config)]: one tree, or one per CPU target under <root>/<target>."""
    config = ctx.config.modules
    if config is None:
        return []
    targets = ctx.plan.targets
    if len(targets) == 1:
        return [(None, dict(config, target=targets[0]))]   # the target: for the catalog page
    out = []
    for target in targets:
        cfg = dict(config, root=os.path.join(config["root"], target), target=target)
        if config.get("lmod_cache"):
            cfg["lmod_cache"] = os.path.join(config["lmod_cache"], target)
        out.append((target, cfg))
    return out


def check_modules(ctx):
    """Plan the module trees without writing: a name clash no rule resolves is reported before anything
    is built. Returns the notes (clashes the rules resolved)."""
    notes = []
    for target, cfg in module_configs(ctx):
        notes += plan_tree(module_entries(ctx, target), cfg).notes
    return notes


def publish_modules(ctx):
    results = []
    for target, cfg in module_configs(ctx):
        if not os.path.isdir(cfg["root"]):
            os.makedirs(cfg["root"])
            os.chmod(cfg["root"], 0o755)  # users read the tree whatever the admin's umask
        lock = StoreLock(os.path.join(cfg["root"], ".publish.lock"), what="publishing modules")
        results.append(publish(module_entries(ctx, target), cfg, lock=lock))
        register_tree(ctx.store, "modules", cfg["root"])  # every GC of this store counts this tree
    return results


def publish_all(ctx):
    published = {"modules": publish_modules(ctx)}
    if ctx.config.profiles:
        published["profiles"] = publish_profiles(ctx)
    return published
