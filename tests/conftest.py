"""Session-wide fixtures: a private Redis server, the real data directory, lone gateways."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

# pytest-xdist gives its workers COLUMNS=80; a rich Console made while it is set keeps that width
# for good, whatever a test sets later. Every test that needs a width sets its own.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

from harness.gateway import Gateway, gateway_running
from harness.ports import start_port_server, stop_port_server
from harness.redis import redis_running

_PORT_SERVER = pytest.StashKey[subprocess.Popen[bytes] | None]()


def pytest_configure(config: pytest.Config) -> None:
    """One port server for the run, started by the main pytest process before its test
    processes (pytest-xdist's workers inherit its address; harness/ports.py)."""
    if hasattr(config, "workerinput") or os.environ.get("PORTSERVER_ADDRESS"):
        return
    config.stash[_PORT_SERVER] = start_port_server(_port_server_log())


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_port_server(config.stash.get(_PORT_SERVER, None), _port_server_log())


def _port_server_log() -> Path:
    return Path(tempfile.gettempdir()) / f"fdl-port-server-{os.getpid()}.log"


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 data: FDL_TEST_DATA_DIR, ../shared/data (CI) or, on a fresh
    clone, a cache under var/test-data that the first run downloads (harness/testdata.py)."""
    from harness.testdata import DataFetchError, find_test_data

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
    with redis_running(tmp_path_factory.mktemp("redis"), logs_dir) as url:
        yield url


@pytest.fixture
def lone_gateway(tmp_path: Path, logs_dir: Path) -> Callable[..., AbstractContextManager[Gateway]]:
    """Gateways with no model server behind them (job routes need none), over an empty
    repository: ``with lone_gateway(name, redis_url, **FDL_settings) as gateway: …``."""

    def start(name: str, redis_url: str, **overrides: str) -> AbstractContextManager[Gateway]:
        secrets, models = tmp_path / f"secrets-{name}", tmp_path / "models"
        return gateway_running(name, logs_dir, redis_url, None, models, secrets, **overrides)

    return start
