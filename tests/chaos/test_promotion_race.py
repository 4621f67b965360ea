"""Two gateway replicas promote on one model repository while a worker keeps publishing: every
acknowledged promotion stays in ``labels.json`` and ``models.config`` (issue 16, section 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.promotion_race import MODEL, build_repository, publisher, race
from harness.gateway import ADMIN_KEY, Gateway, start_gateway
from harness.model_server import ModelServer, start_model_server, wait_for_models

PROMOTE_TIMEOUT_S = 10


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, Path]:
    model_dir = tmp_path / "models"
    return model_dir, build_repository(model_dir)


@pytest.fixture
def server(repository: tuple[Path, Path], logs_dir: Path) -> Iterator[ModelServer]:
    running = start_model_server("race-model-server", repository[0], logs_dir)
    try:
        wait_for_models(running, {MODEL: 3})
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def gateways(
    server: ModelServer,
    repository: tuple[Path, Path],
    redis_url: str,
    logs_dir: Path,
    tmp_path: Path,
) -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    try:
        for name in ("race-gateway-a", "race-gateway-b"):
            started.append(
                start_gateway(
                    name,
                    logs_dir,
                    redis_url,
                    server.port,
                    repository[0],
                    tmp_path / name,
                    FDL_PROMOTE_TIMEOUT_S=str(PROMOTE_TIMEOUT_S),
                )
            )
        yield started
    finally:
        for gateway in started:
            gateway.process.stop()


def test_no_acknowledged_promotion_is_lost(
    gateways: list[Gateway], repository: tuple[Path, Path], tmp_path: Path, logs_dir: Path
) -> None:
    model_dir, template = repository
    with publisher(model_dir, template, tmp_path, logs_dir):
        result = race((gateways[0].url, gateways[1].url), ADMIN_KEY, model_dir, 100, True)
    assert result.lost == 0, result.lost_examples[:5]
    assert result.acknowledged == 200, result.line()
    assert not result.failed, result.line()
    # No promotion waited for a load that never came (the old 504 after the full timeout).
    assert result.slowest_s < PROMOTE_TIMEOUT_S / 2, result.line()
    published = [p for p in (model_dir / MODEL).iterdir() if p.name.isdigit()]
    assert len(published) > 3, "the publishing loop published nothing during the race"
