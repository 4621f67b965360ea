"""A failed job's error, as ``GET /v1/jobs/{id}`` (and so the UI and `fdl job`) shows it, names the
worker's folders by their settings (``$FDL_DATA_DIR/mnist``), never their absolute paths on the
worker (its user's home folder, its layout); the worker's log keeps the whole path. Before, a job
on missing data read "MNIST not found: expected ... in /home/ana/fdl/data/mnist or
/home/ana/fdl/data (FDL_DATA_DIR)".

A real gateway and a real worker (on a queue of their own) over the session's Redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from harness.gateway import Gateway
from harness.procs import wait_for
from harness.worker import Worker, worker_running

QUEUE = f"fdl-tests-error-paths-{os.getpid()}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the worker's folders lie, as in a user's home folder."""
    return tmp_path_factory.mktemp("error-paths") / "home" / "ana" / "fdl"


@pytest.fixture(scope="module")
def worker(redis_url: str, home: Path, logs_dir: Path) -> Iterator[Worker]:
    """A worker whose data folder holds no MNIST (and may download none)."""
    data = home / "data"
    data.mkdir(parents=True)
    env = {"FDL_TRAINING_QUEUE": QUEUE}
    with worker_running("worker-error-paths", redis_url, data, home, logs_dir, env) as running:
        yield running


@pytest.fixture
def own_gateway(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str
) -> Iterator[Gateway]:
    """A gateway that sends its jobs to the worker's queue (no model server: none is needed)."""
    with lone_gateway("gateway-error-paths", redis_url, FDL_TRAINING_QUEUE=QUEUE) as running:
        yield running


def test_a_failed_jobs_error_shows_the_data_folder_by_its_setting(
    own_gateway: Gateway, worker: Worker, home: Path
) -> None:
    created = httpx.post(
        f"{own_gateway.url}/v1/jobs",
        json={"model": "mnist_logreg", "epochs": 1, "publish_as": "error_paths"},
        headers=own_gateway.admin(),
        timeout=30,
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    worker.wait_done(job_id)
    job = httpx.get(
        f"{own_gateway.url}/v1/jobs/{job_id}", headers=own_gateway.admin(), timeout=30
    ).json()
    assert job["status"] == "failed", job
    error = job["error"]
    assert str(home) not in error and "/ana/" not in error, error
    # Still says what is missing and where: relative to the folder the user set.
    assert error.startswith("MNIST not found: expected "), error
    assert "in $FDL_DATA_DIR/mnist or $FDL_DATA_DIR (FDL_DATA_DIR)" in error, error
    assert "downloads are disabled" in error, error
    # The job's event stream carries the same error.
    with httpx.stream(
        "GET", f"{own_gateway.url}/v1/jobs/{job_id}/events", headers=own_gateway.admin(), timeout=30
    ) as events:
        text = "".join(events.iter_text())
    assert "$FDL_DATA_DIR/mnist" in text and str(home) not in text, text
    # The worker's own log keeps the whole path, for its operator.
    wait_for(
        lambda: str(home / "data" / "mnist") in worker.process.log_path.read_text(errors="replace"),
        30,
        "the worker's log line naming the folder",
    )
