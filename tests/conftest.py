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
from harness.worker import end_unfinished_jobs

_PORT_SERVER = pytest.StashKey[subprocess.Popen[bytes] | None]()
_SESSION_REDIS = pytest.StashKey[str]()
# The reasons of the skips a CI machine may take start with this: the test needs what that
# machine may lack and CI does not provide (root, IPv6, kubectl, a TF Serving binary) or does
# not apply there. Under CI (CI=true) every other skip fails: a test that CI should run (its
# browser, strace, the shared data) is never counted as passed unrun.
PLATFORM_SKIP = "platform: "


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and _under_ci()) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(PLATFORM_SKIP):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run it: {reason}"


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
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[str]:
    """A private Redis server on a free port, the same way `fdl up` starts one."""
    with redis_running(tmp_path_factory.mktemp("redis"), logs_dir) as url:
        request.config.stash[_SESSION_REDIS] = url
        try:
            yield url
        finally:
            del request.config.stash[_SESSION_REDIS]


@pytest.fixture(scope="module", autouse=True)
def unfinished_jobs_end_with_their_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs that a module leaves queued or running on any database of the session's Redis (made
    by hand, a worker's run cut short) are ended when it ends, after its own workers stopped:
    a worker of a later module would adopt them (tests/test_suite_rules.py)."""
    yield
    url = request.config.stash.get(_SESSION_REDIS, None)
    if url is not None:
        end_unfinished_jobs(url, f"left unfinished by {request.module.__name__}")


@pytest.fixture
def lone_gateway(tmp_path: Path, logs_dir: Path) -> Callable[..., AbstractContextManager[Gateway]]:
    """Gateways with no model server behind them (job routes need none), over an empty
    repository: ``with lone_gateway(name, redis_url, **FDL_settings) as gateway: …``."""

    def start(name: str, redis_url: str, **overrides: str) -> AbstractContextManager[Gateway]:
        secrets, models = tmp_path / f"secrets-{name}", tmp_path / "models"
        return gateway_running(name, logs_dir, redis_url, None, models, secrets, **overrides)

    return start
