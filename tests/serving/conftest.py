"""Fixtures for the model-server conformance suite.

Models are built once per session by :mod:`harness.models`. ``harness.tfs.start_server``
starts either our server or, with ``FDL_TFS_BINARY`` set, the real ``tensorflow_model_server``;
tests that take the ``impl`` fixture run against both, and the real-binary runs are skipped
(with the reason) when no binary is given.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.tfs import CLASSES, SHAPE, TFS_BINARY, ModelStock, Server, start_server


@pytest.fixture(scope="session")
def model_stock(tmp_path_factory: pytest.TempPathFactory) -> ModelStock:
    from harness.models import build_test_model

    root = tmp_path_factory.mktemp("stock")
    stock = ModelStock(root)
    for kind, seed, warmup in (("a", 0, 2), ("b", 1, 0), ("c", 2, 0)):
        stock.versions[kind] = build_test_model(
            root / kind, input_shape=SHAPE, num_classes=CLASSES, seed=seed,
            warmup_requests=warmup, model_name="tiny",
        )  # fmt: skip
    broken = root / "broken"
    shutil.copytree(stock.versions["b"], broken)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    stock.versions["broken"] = broken
    return stock


@pytest.fixture(params=["fdl", "tfs"], scope="module")
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "tfs" and not TFS_BINARY:
        pytest.skip("FDL_TFS_BINARY is not set: no real tensorflow_model_server to compare with")
    return request.param


@pytest.fixture(scope="module")
def server_factory(logs_dir: Path) -> Iterator:
    started: list[Server] = []

    def factory(impl: str, name: str, flags: Sequence[str], timeout: float = 90) -> Server:
        server = start_server(impl, name, logs_dir, flags, timeout)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
