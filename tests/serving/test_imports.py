"""The model server's modules import one way: entry point -> front ends -> data plane."""

from __future__ import annotations

from pathlib import Path

from harness.imports import import_cycle, import_graph

ROOT = Path(__file__).resolve().parents[2]


def test_serving_has_no_import_cycle() -> None:
    assert import_cycle(ROOT, "serving") is None


def test_only_the_entry_point_imports_the_process_module() -> None:
    graph = import_graph(ROOT, "serving")
    importers = {module for module, imported in graph.items() if "serving.server" in imported}
    assert importers == {"serving.__main__"}
    assert not any("serving.__main__" in imported for imported in graph.values())


def test_the_rest_front_end_borrows_nothing_from_the_grpc_one() -> None:
    graph = import_graph(ROOT, "serving")
    rest = [module for module in graph if module.startswith("serving.protocol.rest")]
    assert rest
    for module in rest:
        assert not any(name.startswith("serving.protocol.grpc") for name in graph[module]), module
