"""The package layout keeps its two promises: imports flow one way (app -> deploy -> kws ->
frontend) and no module imports a module that imports it back, counting imports inside
functions too (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("frontend", "kws", "deploy", "app")  # each may import only those before it


def modules() -> dict:
    """``{dotted name: path}`` of every installed module (the Pi/Android templates are scripts
    for the device, not part of the package's import graph)."""
    out = {}
    for pkg in LAYERS:
        for p in (REPO / pkg).rglob("*.py"):
            rel = p.relative_to(REPO).with_suffix("")
            if "templates" in rel.parts:
                continue
            parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out["bnnkws." + ".".join(parts)] = p
    return out


def import_graph(mods: dict) -> dict:
    """``{module: {modules it imports}}``, absolute and relative imports, at any depth."""
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = anchor + ("." + base if base else "")
                if not base.startswith("bnnkws."):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in mods else resolve(base))
            elif isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names if a.name.startswith("bnnkws."))
        targets.discard(None)
        targets.discard(mod)
        graph[mod] = targets
    return graph


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph(modules())
    assert len(graph) > 100  # the walk found the package, not an empty folder
    assert cycles(graph) == []


def test_imports_flow_from_app_down_to_frontend():
    graph = import_graph(modules())
    layer = {name: LAYERS.index(name.split(".")[1]) for name in graph}
    upward = sorted(f"{a} -> {b}" for a, deps in graph.items() for b in deps
                    if layer[b] > layer[a])
    assert upward == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The two checks above are not vacuous: a made-up graph with a lazy circle is caught."""
    graph = {"bnnkws.kws.a": {"bnnkws.kws.b"}, "bnnkws.kws.b": {"bnnkws.kws.a"},
             "bnnkws.kws.c": {"bnnkws.deploy.d"}, "bnnkws.deploy.d": set()}
    assert cycles(graph) == [["bnnkws.kws.a", "bnnkws.kws.b"]]
    pkg = tmp_path / "kws"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from bnnkws.kws import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    mods = {"bnnkws.kws.a": pkg / "a.py", "bnnkws.kws.b": pkg / "b.py"}
    assert cycles(import_graph(mods)) == [["bnnkws.kws.a", "bnnkws.kws.b"]]


def test_every_kws_and_app_subpackage_says_what_it_owns():
    for folder in ("kws/data", "kws/features", "kws/models", "kws/training", "kws/evaluation",
                   "kws/continual", "app/commands", "app/listener", "app/bench", "app/serve"):
        doc = ast.get_docstring(ast.parse((REPO / folder / "__init__.py").read_text()))
        assert doc and len(doc) > 80, folder
