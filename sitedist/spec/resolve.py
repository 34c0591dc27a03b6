"""Resolve a site config into a DAG of build specs, each with its hash document and artifact id.

Rules (admin_docs/site-config.md says the same for admins):
- a package's version is the config's ``version`` or else the recipe's newest; options are the
  recipe's defaults overridden by the config's;
- a package is built once per toolchain it lists (none listed: the site's default compiler) and per
  target;
- a dependency takes its version and options from the config when the config lists it, else the
  recipe's newest and defaults. It is built with the dependent's toolchain when the config lists it
  with that toolchain, with its own single configured toolchain when it has one, and otherwise with
  the default toolchain (so zlib is built once, not once per MPI).
"""

import os
from dataclasses import dataclass, field
from typing import Optional

from sitedist.core.hashing import PROTOCOL, artifact_id, file_sha256
from sitedist.core.sources import source_identity
from sitedist.core.versions import version_key
from sitedist.errors import ConfigError, SitedistError
from sitedist.spec.recipe import STYLE_TOOLS, RecipeIndex, render_script
from sitedist.spec.schema import check_root_vars

BUILDER = 3  # version of the build environment the builder sets up; part of every hash


@dataclass(eq=False)
class Node:
    name: str
    version: str
    aid: str
    kind: str                      # 'package' | 'compiler' | 'mpi'
    doc: dict                      # the hashed document
    recipe: object = None          # spec.recipe.Recipe for packages
    source: dict = None
    options: dict = field(default_factory=dict)
    toolchain: object = None       # host.toolchains.Toolchain
    host: object = None            # host.toolchains.HostPackage for compiler/mpi nodes
    target: str = ""
    deps: dict = field(default_factory=dict)   # kind -> [Node]
    explicit: bool = False
    where: str = ""

    @property
    def key(self):
        return f"{self.name}/{self.version}-{self.aid}"

    @property
    def label(self):
        tc = self.toolchain.name if self.toolchain and not self.toolchain.default else ""
        return f"{self.name} {self.version}" + (f" ({tc})" if tc else "")

    def all_deps(self):
        seen = []
        for kind in ("build", "link", "run", "python"):
            for d in self.deps.get(kind, []):
                if d not in seen:
                    seen.append(d)
        return seen


@dataclass
class Plan:
    nodes: list                    # topological order: dependencies first
    roots: list                    # explicit nodes
    targets: list

    def find(self, name):
        return [n for n in self.nodes if n.name == name]


def host_node(pkg):
    doc = {"protocol": PROTOCOL, "kind": "host", "name": pkg.name, "identity": pkg.identity}
    return Node(name=pkg.name, version=pkg.version, aid=pkg.aid, kind=pkg.kind, doc=doc, host=pkg)


class Resolver:
    def __init__(self, config, host, targets, doc_cache=None):
        self.config = config
        self.host = host
        self.targets = targets             # config target name -> resolved archspec target name
        self.index = RecipeIndex(config.recipe_dirs, doc_cache)
        self.memo = {}
        self.order = []
        self.host_nodes = {}
        self._patch_sums = {}
        self._source_ids = {}
        self._trees = {}                   # local source directory -> its tree hash (for the plan cache)

    def inputs(self, docs=None):
        """What the plan was resolved from, for the plan cache (spec.plan_cache): {file: what was seen
        of it (the recipe's stamp in ``docs``, a patch's sha256)}, {source directory: its tree hash}."""
        files = {r.path: (docs.seen(r.path) if docs is not None else None) for r in self.index.loaded()}
        files.update(self._patch_sums)
        return files, dict(self._trees)

    def _toolchain(self, name, where):
        tc = self.host.toolchains.get(name)
        if tc is None:
            if name == "default":
                raise ConfigError("no compiler found on this machine for the default toolchain", where=where,
                                  hint="install gcc or set 'host: default_compiler:'")
            import difflib

            close = difflib.get_close_matches(name, [t for t in self.host.toolchains if t != "default"], n=1)
            raise ConfigError(f"unknown toolchain '{name}'", where=where,
                              hint=f"did you mean '{close[0]}'?" if close else "define it under 'toolchains:'")
        return tc

    def _dep_toolchain(self, dep_name, parent_tc):
        req = self.config.packages.get(dep_name)
        if req and req.toolchains:
            if parent_tc.name in req.toolchains:
                return parent_tc.name
            if len(req.toolchains) == 1:
                return req.toolchains[0]
        return "default"

    def _host(self, pkg):
        if pkg.aid not in self.host_nodes:
            node = host_node(pkg)
            self.host_nodes[pkg.aid] = node
            self.order.append(node)
        return self.host_nodes[pkg.aid]

    def _tools(self, recipe, name, target, stack):
        """The tool nodes a build of ``recipe`` uses and their part of its hash document: a host tool is
        named by its version (never its path), a tool built from a recipe by its artifact id."""
        nodes, doc = [], {}
        for tool, constraints in recipe.required_tools().items():
            source = self.config.tools.get(tool, "host")
            if source == "host":
                found = self.host.find_tool(tool)
                if not found:
                    raise ConfigError(
                        f"package {name}: build tool {tool} is not on this machine; the recipe {recipe.path} "
                        f"needs it (build: {recipe.build}" + (", tools:" if tool not in STYLE_TOOLS[recipe.build]
                                                              else "") + "). sitedist looked in "
                        f"{', '.join(self.host.search_dirs) or '(no directories)'} (PATH, then 'host: paths:')",
                        where=recipe.where("build") if tool in STYLE_TOOLS[recipe.build] else
                        recipe.where("tools", [t for t, _ in recipe.tools].index(tool)),
                        hint=f"install {tool}, add the directory that holds it to 'host: paths:', declare it under "
                             f"'host: packages: {tool}: {{kind: tool, prefix: DIR}}', or build it from a recipe "
                             f"with 'tools: {{{tool}: recipe}}'")
                ok = [p for p in found if all(_satisfies(p.version, c, w) for c, w in constraints)]
                if not ok:
                    self._too_old(name, recipe, tool, constraints, [(p.version, p.probed.executables[0][1])
                                                                    for p in found])
                node = self._host(ok[0])
                doc[tool] = {"version": node.version}
            else:
                where = self.config.where("tools", tool)
                node = self.resolve(source["recipe"], "default", target, stack, where=where,
                                    version=source.get("version"))
                if not all(_satisfies(node.version, c, w) for c, w in constraints):
                    self._too_old(name, recipe, tool, constraints, [(node.version, f"recipe {node.recipe.path}")])
                doc[tool] = {"version": node.version, "id": node.aid}
            nodes.append(node)
        return nodes, doc

    def _too_old(self, name, recipe, tool, constraints, found):
        need = ",".join(c for c, _ in constraints)
        have = "; ".join(f"{tool} {v} ({where})" for v, where in found)
        raise ConfigError(f"package {name}: recipe {recipe.path} needs {tool} {need}, but the {tool} found is: "
                          f"{have}", where=constraints[0][1],
                          hint=f"provide a {tool} that satisfies {need}: put its directory under 'host: paths:', "
                               f"declare it under 'host: packages: {tool}: {{kind: tool, prefix: DIR}}', or build "
                               f"it from a recipe with 'tools: {{{tool}: recipe}}'")

    def _source_id(self, recipe, version):
        key = (recipe.path, version)
        if key not in self._source_ids:
            try:
                self._source_ids[key] = source_identity(recipe.versions[version])
                if "tree_sha256" in self._source_ids[key]:
                    self._trees[recipe.versions[version]["path"]] = self._source_ids[key]["tree_sha256"]
            except SitedistError as exc:
                raise ConfigError(str(exc), where=recipe.where("versions", version)) from None
        return self._source_ids[key]

    def resolve(self, name, tc_name, target, stack, explicit=False, where=None, version=None, options=None):
        req = self.config.packages.get(name)
        where = where or (req.where if req else self.config.path)
        recipe_name = req.recipe if req else name
        recipe = self.index.load(recipe_name, where)
        if version is None:
            version = (req.version if req else None) or recipe.newest
        if version not in recipe.versions:
            raise ConfigError(f"package {name}: recipe {recipe.path} has no version {version} "
                              f"(it has: {', '.join(sorted(recipe.versions, key=version_key))})", where=where)
        options = recipe.resolve_options(options if options is not None else (req.options if req else {}), where)
        memo_key = (name, version, tuple(sorted(options.items())), tc_name, target)
        if memo_key in self.memo:
            node = self.memo[memo_key]
            node.explicit = node.explicit or explicit
            return node
        if memo_key in stack:
            cycle = [k[0] for k in stack[stack.index(memo_key):]] + [name]
            raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}", where=where,
                              hint="remove one of these 'depends' entries from its recipe")
        stack = stack + [memo_key]
        tc = self._toolchain(tc_name, where)
        deps = {}
        for kind in ("build", "link", "run"):
            for i, dep in enumerate(recipe.depends.get(kind, [])):
                dep_where = recipe.where("depends", kind, i)
                if dep == name:
                    raise ConfigError(f"package {name} depends on itself", where=dep_where)
                dep_node = self.resolve(dep, self._dep_toolchain(dep, tc), target, stack, where=dep_where)
                deps.setdefault(kind, []).append(dep_node)
        host_deps = [self._host(p) for p in tc.host_packages()]
        tool_nodes, tools_doc = self._tools(recipe, name, target, stack)
        python = self._python(recipe, name, tc, target, stack) if recipe.build == "python" else None
        script = render_script(recipe, version, options)
        for file, _ in recipe.patches:
            if file not in self._patch_sums:
                self._patch_sums[file] = file_sha256(file)
        doc = {
            "protocol": PROTOCOL,
            "builder": BUILDER,
            "name": name,
            "version": version,
            "source": self._source_id(recipe, version),
            "patches": [[self._patch_sums[f], strip] for f, strip in recipe.patches],
            "script": script,
            "options": options,
            "depends": {kind: {d.name: d.aid for d in nodes} for kind, nodes in deps.items()},
            "toolchain": tc.identity(),
            "tools": tools_doc,
            "target": target,
        }
        if tc.cuda is not None:
            doc["cuda_arch"] = self._cuda_arch(tc)
        if python is not None:
            doc["python"] = python_identity(python)
        if recipe.provides:   # sitedist finishes such a build (the Python hook): a different artifact
            doc["provides"] = sorted(recipe.provides)
        node = Node(name=name, version=version, aid=artifact_id(doc), kind="package", doc=doc, recipe=recipe,
                    source=recipe.versions[version], options=options, toolchain=tc, target=target,
                    deps={**deps, "host": host_deps, "tools": tool_nodes, "python": [python] if python else []},
                    explicit=explicit, where=where)
        self.memo[memo_key] = node
        self.order.append(node)
        return node

    def _python(self, recipe, name, tc, target, stack):
        """The Python a Python package is built with and for: the host's (its identity enters the hash) or,
        with ``python: NAME`` in the config, the package NAME, whose recipe provides one (its id enters)."""
        choice = self.config.python
        if choice == "host":
            if not self.host.pythons:
                raise ConfigError(
                    f"package {name}: recipe {recipe.path} builds a Python package (build: python), but no python3 "
                    f"was found on this machine; sitedist looked in {', '.join(self.host.search_dirs) or '(none)'} "
                    f"(PATH, then 'host: paths:')", where=recipe.where("build"),
                    hint="install python3, add its directory to 'host: paths:', declare one under 'host: packages: "
                         "python: {kind: python, prefix: DIR}', or build one from a recipe with 'python: cpython'")
            return self._host(self.host.pythons[0])
        where = self.config.where("python")
        node = self.resolve(choice, self._dep_toolchain(choice, tc), target, stack, where=where)
        if "python" not in node.recipe.provides:
            raise ConfigError(f"python: {choice}: the recipe {node.recipe.path} does not provide a Python (it has no "
                              f"'provides: [python]')", where=where,
                              hint="name a package whose recipe provides Python (e.g. cpython), or 'host'")
        return node

    def _cuda_arch(self, tc):
        archs = self.config.cuda_arch
        if not archs:
            raise ConfigError(f"toolchain {tc.name} builds with CUDA, but the config lists no GPU architectures",
                              where=tc.where, hint="list them at the top level, e.g. 'cuda_arch: [80, 90]' "
                                                   "(A100 = 80, H100/H200 = 90)")
        supported = getattr(tc.cuda.probed, "archs", ())
        bad = [a for a in archs if supported and a.rstrip("af") not in supported]
        if bad:
            raise ConfigError(f"cuda_arch: CUDA {tc.cuda.version} (toolchain {tc.name}) cannot build for "
                              f"{', '.join(bad)}", where=self.config.where("cuda_arch"),
                              hint=f"this nvcc builds for: {', '.join(supported)}")
        return sorted(dict.fromkeys(archs), key=lambda a: (len(a), a))

    def plan(self):
        roots = []
        for name in sorted(self.config.packages):
            req = self.config.packages[name]
            for tc_name in req.toolchains or ["default"]:
                for target in self.targets.values():
                    roots.append(self.resolve(name, tc_name, target, [], explicit=True, where=req.where))
        # Host compilers and MPIs of named toolchains are published as modules even if no package uses them.
        for tc in self.host.toolchains.values():
            if tc is not None and not tc.default:
                for pkg in tc.host_packages():
                    self._host(pkg)
        nodes = []
        seen = set()
        for node in self.order:
            if node.key not in seen:
                seen.add(node.key)
                nodes.append(node)
        check_root_vars((n.name, n.kind, n.recipe.where("name") if n.recipe else n.where) for n in nodes)
        return Plan(nodes=nodes, roots=roots, targets=list(self.targets.values()))


def python_identity(node):
    """What a Python package's hash records of its Python: a host Python's identity (implementation,
    version, ABI tag, platform; never its path), or a Python built from a recipe's name, version and id."""
    if node.kind == "python":
        return dict(node.host.identity)
    return {"name": node.name, "version": node.version, "id": node.aid}


def _satisfies(version, constraint, where):
    from sitedist.host.tools import satisfies

    try:
        return satisfies(version, constraint)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=where) from None


def diff_docs(old, new, prefix=""):
    """Which inputs differ between two hash documents, as dotted keys."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += diff_docs(a, b, f"{prefix}{key}.")
        else:
            changed.append(f"{prefix}{key}")
    return changed


def why(store, node):
    """Why ``node`` must be built: 'new', or which inputs changed against the newest build of the same
    package, version and toolchain in the store."""
    pkg_dir = os.path.join(store.root, node.name)
    best: Optional[tuple] = None
    try:
        entries = os.listdir(pkg_dir)
    except OSError:
        return "new"
    for entry in entries:
        if not entry.startswith(node.version + "-"):
            continue
        prefix = os.path.join(pkg_dir, entry)
        if not store.is_complete(prefix):
            continue
        try:
            spec = store.read_spec(prefix)
            mtime = os.path.getmtime(os.path.join(prefix, ".sitedist", "complete"))
        except (OSError, ValueError):
            continue
        if spec.get("toolchain_name") != (node.toolchain.name if node.toolchain else None):
            continue
        if spec.get("doc", {}).get("target") != node.target:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, spec["doc"])
    if best is None:
        return "new"
    return "changed: " + ", ".join(diff_docs(best[1], node.doc))
