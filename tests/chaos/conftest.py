"""Fixtures of the fault scenarios: a Redis that a test can stop and start again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.redis import RestartableRedis


@pytest.fixture
def restartable_redis(tmp_path: Path, logs_dir: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis", logs_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
