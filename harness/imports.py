"""The import graph of a package's modules, read from their source, and its first cycle."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path


def _module(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (lazy and ``TYPE_CHECKING`` imports included)."""
    sources = {_module(root, path): path for path in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[module] = {name for name in imported if name in sources and name != module}
    return graph


def import_cycle(root: Path, package: str) -> list[str] | None:
    """One import cycle among the package's modules, or None when there is none."""
    try:
        TopologicalSorter(import_graph(root, package)).prepare()
    except CycleError as error:
        return list(error.args[1])
    return None
