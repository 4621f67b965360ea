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

from harness.tfs import (
    CLASSES,
    METRICS_PATH,
    SHAPE,
    TFS_BINARY,
    ModelStock,
    Server,
    model_config,
    start_server,
)


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
        pytest.skip(
            "platform: FDL_TFS_BINARY is not set: no real tensorflow_model_server to compare with"
        )
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


@pytest.fixture(scope="module")
def api_server(
    impl: str, server_factory, model_stock: ModelStock, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    """The API conformance server: ``tiny`` versions 1 (with warmup records) and 2, both served,
    and ``other`` version 5; Prometheus at ``METRICS_PATH``, the gRPC health service on."""
    root = tmp_path_factory.mktemp("api-models")
    for version, kind in ((1, "a"), (2, "b")):
        model_stock.install(kind, root / "tiny", version)
    model_stock.install("c", root / "other", 5)
    config = root / "models.config"
    config.write_text(
        model_config(
            {"tiny": root / "tiny", "other": root / "other"},
            {"tiny": "    model_version_policy { all {} }\n"},
        )
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    server = server_factory(
        impl,
        "api",
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={monitoring}",
            "--enable_grpc_healthcheck_service=true",
        ],
    )
    server.root = root
    return server
