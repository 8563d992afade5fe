"""The shape of supervisor/: no import cycles, the worker apart, small modules (no processes).

Every import counts: at the top, inside functions (lazy), and under
TYPE_CHECKING. A cycle or a worker module reaching into the supervisor side
fails here, where it is cheap to see, not in a forked child.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor"
SUPERVISOR_SIDE = ("supervisor.arbiter", "supervisor.endpoints")
ARBITER = "supervisor.arbiter.arbiter"
# The arbiter's collaborators that may name it; nothing else does.
MAY_IMPORT_ARBITER = {
    "supervisor.arbiter.runner",
    "supervisor.arbiter.operations",
    "supervisor.arbiter.handover",  # the runner's wiring for sd_notify and USR2
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_ARBITER_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every supervisor module ``path`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from supervisor.x import y" imports the module x.y when there is one,
            # else the name y of module x.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    edges = {name: imports_of(path, known) for name, path in modules().items()}
    # A package's __init__ runs on the way to any of its modules: not counted as an
    # edge unless a name of the package itself is imported.
    return {name: targets - {name} for name, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_worker_code_never_imports_the_supervisor_side() -> None:
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("supervisor.worker"):
            assert not [t for t in targets if t.startswith(SUPERVISOR_SIDE)], name


def test_only_the_runner_and_the_operations_import_the_arbiter() -> None:
    importers = {name for name, targets in graph().items() if ARBITER in targets}
    assert importers <= MAY_IMPORT_ARBITER, importers


def test_endpoints_and_hooks_read_a_snapshot_not_the_arbiter() -> None:
    edges = graph()
    for name in ("supervisor.endpoints.control", "supervisor.endpoints.metrics"):
        assert "supervisor.pool" in edges[name]
        assert not [t for t in edges[name] if t.startswith("supervisor.arbiter")], name
    assert "supervisor.pool" in edges["supervisor.arbiter.hooks"]


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_are_small(name: str) -> None:
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{name}.{node.name} has {length} lines"


def test_the_arbiter_class_is_short_with_about_a_dozen_attributes() -> None:
    tree = ast.parse(modules()[ARBITER].read_text())
    (arbiter,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Arbiter"]
    assert (arbiter.end_lineno or 0) - arbiter.lineno + 1 <= MAX_ARBITER_LINES
    attributes = {
        node.attr
        for node in ast.walk(arbiter)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }
    assert len(attributes) <= 14, sorted(attributes)
