"""Session-wide fixtures: a private Redis server and the real data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.redis_server import redis_server_argv
from tests.support.procs import Process, free_port, wait_for


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 data: FDL_TEST_DATA_DIR, ../shared/data (CI) or, on a fresh
    clone, a cache under var/test-data that the first run downloads (tests/support/testdata.py)."""
    from tests.support.testdata import DataFetchError, find_test_data

    try:
        found = find_test_data()
    except DataFetchError as error:
        pytest.fail(f"no test data: {error}; set FDL_TEST_DATA_DIR to a folder that has it")
    if not (found / "mnist").is_dir():
        pytest.fail(f"test data not found at {found} (FDL_TEST_DATA_DIR)")
    return found


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
