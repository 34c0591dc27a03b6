"""Layers only point down (ARCHITECTURE.md): every import of a sitedist module, at module level or inside
a function, goes to the same layer or a lower one, and the imports have no cycle, so no import needs to
be placed inside a function to break one. Reads the source with ast: fast, imports nothing."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sitedist")

# lowest first; a module belongs to the layer of the longest prefix that names it (the package
# ``sitedist`` itself, for __version__, only by its exact name)
LAYERS = [
    ("base", ["sitedist", "sitedist.errors"]),
    ("core", ["sitedist.core"]),
    ("spec & host", ["sitedist.spec", "sitedist.host"]),   # one layer: between them, only no cycle
    ("build", ["sitedist.build", "sitedist.cache"]),
    ("views", ["sitedist.modules", "sitedist.profiles", "sitedist.develop", "sitedist.catalog"]),
    ("ops", ["sitedist.ops"]),
    ("cli", ["sitedist.cli"]),
]


def layer_of(module):
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or (prefix != "sitedist" and module.startswith(prefix + "."))) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return None if best is None else best[0]


def modules():
    """{module name: path} of every module of the package."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), os.path.dirname(ROOT))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, name)
    return out


def imports(name, path, known):
    """[(imported sitedist module, line, inside a function)] of module ``name``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names if a.name.startswith("sitedist"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if not base.startswith("sitedist"):
                    continue
                for alias in child.names:   # 'from sitedist import gc' imports the module sitedist.gc
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in known else base, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def graph():
    known = modules()
    return known, {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer():
    unplaced = [name for name in modules() if layer_of(name) is None]
    assert not unplaced, f"add these modules to a layer in tests/test_layers.py and ARCHITECTURE.md: {unplaced}"


def test_imports_only_point_down():
    known, edges = graph()
    upward = []
    for name, found in edges.items():
        for target, line, _ in sorted(set(found)):
            if layer_of(target) is not None and layer_of(name) is not None and layer_of(target) > layer_of(name):
                upward.append(f"{known[name]}:{line}: {name} ({LAYERS[layer_of(name)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycle_even_through_imports_inside_functions():
    known, edges = graph()
    succ = {name: sorted({t for t, _, _ in found if t in known and t != name}) for name, found in edges.items()}
    state, stack = {}, []

    def walk(node):
        state[node] = "open"
        stack.append(node)
        for nxt in succ[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                lines = []
                for a, b in zip(cycle, cycle[1:]):
                    line, nested = next((ln, n) for t, ln, n in edges[a] if t == b)
                    lines.append(f"{known[a]}:{line}: imports {b}" + (" (inside a function)" if nested else ""))
                pytest.fail("import cycle:\n" + "\n".join(lines))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(succ):
        if name not in state:
            walk(name)


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    """The checker itself: an import inside a function is an import (the way cycles used to hide)."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from sitedist.ops import sync\n    return sync\n")
    found = imports("sitedist.core.mod", str(path), {"sitedist.ops.sync", "sitedist.ops"})
    assert found == [("sitedist.ops.sync", 2, True)]
    assert layer_of("sitedist.ops.sync") > layer_of("sitedist.core.mod")
