"""After a burst of publishes, the gateway's "latest" answers from the newest version within one
config poll of the model server (issue 16, section 2), even for a model with a labelled version
(which stays loaded and is, while the newest loads, the newest available one)."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from fdl import contract
from fdl.repository import Repository
from harness.gateway import Gateway, start_gateway
from harness.mnist import png_bytes
from harness.model_server import (
    ModelServer,
    start_model_server,
    versions_available,
    wait_for_models,
)
from harness.procs import wait_for

MODEL = "lat"
POLL_S = 1.0  # the model server's --model_config_file_poll_wait_seconds in the test helper
PNG = png_bytes(np.zeros((28, 28), np.uint8))


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Repository, Path]:
    from harness.models import build_test_model

    model_dir = tmp_path / "models"
    for version in (1, 2):
        build_test_model(model_dir / MODEL / str(version), (28, 28, 1), 10, seed=version)
    template = tmp_path / "template"
    build_test_model(template, (28, 28, 1), 10, seed=7)
    (template / contract.ASSETS_EXTRA_DIR).mkdir(exist_ok=True)
    repository = Repository(model_dir)
    with repository.locked():
        repository.write_labels({MODEL: {"stable": 1}})
    repository.sync()
    return repository, template


@pytest.fixture
def stack(
    repository: tuple[Repository, Path], redis_url: str, logs_dir: Path, tmp_path: Path
) -> Iterator[tuple[ModelServer, Gateway]]:
    model_dir = repository[0].model_dir
    server = start_model_server("latest-model-server", model_dir, logs_dir)
    gateway = None
    try:
        wait_for_models(server, {MODEL: 2})
        gateway = start_gateway(
            "latest-gateway", logs_dir, redis_url, server.port, model_dir, tmp_path / "secrets"
        )
        yield server, gateway
    finally:
        if gateway is not None:
            gateway.process.stop()
        server.process.stop()


def latest(gateway: Gateway, client: httpx.Client | None = None) -> int:
    response = (client or httpx).post(
        f"{gateway.url}/v1/models/{MODEL}:classify",
        files=[("file", ("a.png", PNG, "image/png"))],
        headers=gateway.classifier(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def publish_burst(repo: Repository, template: Path, first_job: int, count: int) -> None:
    """Versions back to back, as several workers finishing together, with traffic meanwhile."""
    for n in range(first_job, first_job + count):
        job_id = f"burst-{n}"
        staged = repo.model_dir / MODEL / f".tmp-{job_id}"
        shutil.copytree(template, staged)
        (staged / contract.METADATA_FILE).write_text(json.dumps({"job_id": job_id}))
        repo.publish(staged, MODEL, job_id)


@contextmanager
def traffic(gateway: Gateway) -> Iterator[None]:
    """Classify "latest" back to back in a thread, as a busy client does."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                latest(gateway, client)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_latest_follows_a_burst_of_publishes(
    repository: tuple[Repository, Path], stack: tuple[ModelServer, Gateway]
) -> None:
    repo, template = repository
    server, gateway = stack
    assert latest(gateway) == 2
    lags = []
    for burst in range(3):  # versions 3-5, 6-8, 9-11
        with traffic(gateway):
            publish_burst(repo, template, 3 * burst, 3)
            newest = repo.versions(MODEL)[-1]
            published = time.monotonic()
            loaded = wait_for(
                lambda v=newest: v in versions_available(server.target, MODEL) and time.monotonic(),
                30,
                f"version {newest} to be served",
                interval=0.01,
            )
            answered = wait_for(
                lambda v=newest: latest(gateway) == v and time.monotonic(),
                30,
                f"latest == {newest}",
                interval=0.01,
            )
        lags.append(answered - loaded)
        assert answered - published < POLL_S + 3.0, f"{answered - published:.2f}s after a burst"
        assert all(latest(gateway) == newest for _ in range(3))
    # "latest" follows the newest version as soon as it is served; the old gateway kept its
    # resolution made while the newest loaded (the labelled version) for up to 2 s more. The
    # median of the three bursts, so one burst slowed by a loaded machine (0.70 s once in CI,
    # with the others at 0.31 and 0.32 s) is no failure; the max still bounds every burst.
    assert sorted(lags)[1] < 0.5, f"the gateway answered from the newest version {lags} s late"
    assert max(lags) < 1.5, f"the gateway answered from the newest version {lags} s late"
