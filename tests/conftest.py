"""Session-wide fixtures: a private Redis server and the real data directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.redis_server import redis_server_argv
from tests.support.procs import REPO_ROOT, Process, free_port, wait_for

SHARED_DATA = Path(os.environ.get("FDL_TEST_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 data that CI provides beside the checkout."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"test data not found at {SHARED_DATA}; set FDL_TEST_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """A private Redis server on a free port, the same way `fdl up` starts one."""
    port = free_port()
    process = Process("redis", redis_server_argv(port, tmp_path_factory.mktemp("redis")), logs_dir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(client.ping, 20, "redis", check=process.ensure_alive)
    yield url
    client.close()
    process.stop()
