"""A real gateway with no model server behind it (the job routes need none), shared by the tests
of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.gateway import Gateway, gateway_running


@pytest.fixture(scope="module")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    logs_dir: Path,
    redis_url: str,
) -> Iterator[Gateway]:
    name = f"gateway-{request.module.__name__.rsplit('.', 1)[-1]}"
    root = tmp_path_factory.mktemp(name)
    with gateway_running(name, logs_dir, redis_url, None, root / "models", root / "secrets") as up:
        yield up
