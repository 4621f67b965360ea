"""Fixtures of the deployment tests: the Redis the worker's liveness tests run against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.redis import RestartableRedis


@pytest.fixture(scope="module")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[RestartableRedis]:
    """A Redis of the test module's own, which its tests stop, pause and restart."""
    server = RestartableRedis(tmp_path_factory.mktemp("liveness-redis"), logs_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
