"""Modulefiles: Lmod (Lua) and Tcl module trees, flat or hierarchical, published atomically in generations.

The API the rest of sitedist uses:
    plan_tree(entries, config) -> TreePlan          pure; ModulesError on an unresolvable name clash
    publish(entries, config, lock=...) -> PublishResult
    rollback(root, lock=...) -> int, switch_generation(root, n, lock=...) -> int
    list_generations(root) -> [Generation]
    exists(root), live_prefixes(root, skip=()) -> set of prefixes: what the GC asks every view
    modulepath_roots(config) -> {format: dir}, modulepath_lines(config) -> [str]
"""

from sitedist.modules.entry import ModuleEntry
from sitedist.modules.plan import PlannedModule, TreePlan, plan_tree
from sitedist.modules.lmod_cache import refresh_lmod_cache
from sitedist.modules.publish import (Generation, PublishResult, exists, list_generations, live_prefixes,
                                      modulepath_lines, modulepath_roots, publish, rollback, switch_generation)

__all__ = ["ModuleEntry", "PlannedModule", "TreePlan", "plan_tree", "Generation", "PublishResult", "publish",
           "rollback", "switch_generation", "list_generations", "exists", "live_prefixes", "modulepath_lines",
           "modulepath_roots", "refresh_lmod_cache"]
