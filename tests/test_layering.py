"""Layers: ``budgets`` ← ``tasks`` ← ``flows`` (← ``deployments``); nothing lower imports anything higher.

Read from the source (every ``import`` statement, also inside functions), so a lazy import counts too.
Module-level cycles are refused outright. The cycles that exist only through function-level imports are
listed below, to be broken one by one: the list may shrink, never grow.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LAYERS = {"budgets": 0, "tasks": 1, "flows": 2, "deployments": 3}

# Function-level import cycles still to break (each names its modules, sorted): none left; keep it so.
KNOWN_LAZY_CYCLES: set[tuple[str, ...]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for folder in ("budgets", "tasks", "flows", "deployments", "rungflow"):
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[0] != "rungflow":
                parts.insert(0, "rungflow")
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(path: Path, *, module_level_only: bool, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, module_level_only=module_level_only, known=known) - {name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_nothing_lower_imports_anything_higher() -> None:
    wrong = sorted((src, dst) for src, targets in _graph(module_level_only=False).items() for dst in targets
                   if _layer(src) is not None and _layer(dst) is not None and _layer(dst) > _layer(src))  # type: ignore[operator]
    assert not wrong, f"imports against the layers: {wrong}"


def test_the_pure_core_imports_no_other_rungflow_module() -> None:
    wrong = sorted((src, dst) for src, targets in _graph(module_level_only=False).items() for dst in targets
                   if _layer(src) == 0 and _layer(dst) != 0)
    assert not wrong, f"budgets imports outside budgets: {wrong}"


def test_no_module_level_import_cycle() -> None:
    assert _cycles(_graph(module_level_only=True)) == set()


def test_function_level_cycles_only_shrink() -> None:
    cycles = _cycles(_graph(module_level_only=False))
    new = cycles - KNOWN_LAZY_CYCLES
    assert not new, f"new import cycles: {sorted(new)}"
    gone = KNOWN_LAZY_CYCLES - cycles
    assert not gone, f"broken cycles still listed in KNOWN_LAZY_CYCLES (remove them): {sorted(gone)}"


def test_the_benches_import_each_other_without_a_cycle() -> None:
    # The benches sit beside the package, not in a layer; shared settings go in bench/common.py, below them all.
    modules = {f"bench.{p.stem}": p for p in (REPO / "bench").glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path, module_level_only=False, known=set(modules)) - {name} for name, path in modules.items()}
    assert _cycles(graph) == set()
