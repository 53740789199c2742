"""The package's imports point one way: no cycle, and nothing low reaches up.

Every import counts, also the ones inside functions (a cycle hidden in a function is still a
cycle). Layers, low to high: config/errors/lsn -> contract, clients, pgoutput, oltp, olap,
progress, replication, warehouse -> capture/, router/ -> services/ -> stack -> what notebooks
and the command line use.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cdc_kit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """cdc_kit modules imported anywhere in a file (`from cdc_kit.x import y` -> cdc_kit.x,
    or cdc_kit.x.y when y is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cdc_kit"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cdc_kit"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_the_graph_sees_imports_inside_functions() -> None:
    assert "cdc_kit.capture.worker" in GRAPH["cdc_kit.__main__"]  # imported inside cmd_capture


def test_capture_router_and_services_never_import_the_stack() -> None:
    low = [
        m for m in GRAPH if m.startswith(("cdc_kit.capture", "cdc_kit.router", "cdc_kit.services"))
    ]
    offenders = {m: sorted(GRAPH[m] & {"cdc_kit.stack", "cdc_kit.demo"}) for m in low}
    assert not {m: i for m, i in offenders.items() if i}


LAYERS = [
    {"cdc_kit.config", "cdc_kit.errors", "cdc_kit.lsn", "cdc_kit.tls"},
    {"cdc_kit.contract", "cdc_kit.clients", "cdc_kit.pgoutput", "cdc_kit.oltp", "cdc_kit.olap",
     "cdc_kit.progress", "cdc_kit.replication", "cdc_kit.warehouse"},
]  # fmt: skip


def test_the_lowest_layers_import_only_what_is_below_them() -> None:
    below: set[str] = set()
    for layer in LAYERS:
        for module in layer:
            assert GRAPH[module] <= below | layer, (module, sorted(GRAPH[module] - below - layer))
        below |= layer
