"""The package's imports point one way: a lower floor never imports a higher one, and
siblings on one floor (multipliers/data, evaluation/search) never import each other.
Checked on the source text (every import statement, also those inside functions), so a
lazy import cannot hide an upward edge."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "surrogate_nas"

# floor of each top-level part; equal floors are siblings that must not import each other
FLOORS = {
    "errors": 0, "genome": 0, "config": 0, "_lazy": 0,
    "multipliers": 1, "data": 1,
    "emulation": 2,
    "network": 3,
    "evaluation": 4, "search": 4,
    "results": 5,
    "workflows": 6,
    "experiments": 7,
    "cli": 8,
    "axconv": 9,  # deprecated alias of emulation, imported by nothing inside the package
    "__main__": 9,
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("surrogate_nas"):
            if node.module == "surrogate_nas":
                yield from (f"surrogate_nas.{a.name}" for a in node.names if a.name != "__version__")
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("surrogate_nas."))


def _violations():
    found = []
    for name, path in _modules():
        here = _part(name)
        if here == "":
            continue  # the top-level face re-exports lazily from everywhere
        for target in _imports(path):
            there = _part(target)
            if there == "" or there == here:
                continue
            if FLOORS[there] > FLOORS[here] or (FLOORS[there] == FLOORS[here] and there != "errors"):
                found.append(f"{name} imports {target}")
    return found


def test_every_part_has_a_floor():
    parts = {_part(name) for name, _ in _modules()} - {""}
    assert parts <= set(FLOORS), parts - set(FLOORS)


def test_imports_point_down():
    assert _violations() == []


def test_no_module_over_450_lines():
    long = {name: n for name, path in _modules() if (n := len(path.read_text().splitlines())) > 450}
    assert long == {}


@pytest.mark.parametrize("sub", ["multipliers", "data", "emulation", "network", "evaluation", "search", "results",
                                 "workflows", "experiments", "cli"])
def test_subpackage_face_says_what_it_may_import(sub):
    init = PACKAGE / sub / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and "import" in doc.lower(), f"{init}: docstring must say what the subpackage may import"


def test_no_import_cycle_among_modules():
    """Also inside a subpackage: every import (lazy ones included) goes one way."""
    names = {name for name, _ in _modules()}
    graph = {}
    for name, path in _modules():
        graph[name] = set()
        for target in _imports(path):
            while target and target not in names:  # `from pkg.mod import name` names a module or a package
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + ".") and target != "surrogate_nas":
                graph[name].add(target)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
