"""After a burst of publishes, the gateway's "latest" answers from the newest version within one
config poll of the model server (issue 16, section 2), even for a model with a labelled version
(which stays loaded and is, while the newest loads, the newest available one)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fdl import contract
from fdl.repository import Repository
from tests.api.support import (
    Gateway,
    ModelServer,
    start_gateway,
    start_model_server,
    versions_available,
    wait_for_models,
)
from tests.support.mnist import png_bytes
from tests.support.procs import wait_for

MODEL = "lat"
POLL_S = 1.0  # the model server's --model_config_file_poll_wait_seconds in the test helper
PNG = png_bytes(np.zeros((28, 28), np.uint8))


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Repository, Path]:
    from serving.testing import build_test_model

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


def latest(gateway: Gateway) -> int:
    response = httpx.post(
        f"{gateway.url}/v1/models/{MODEL}:classify",
        files=[("file", ("a.png", PNG, "image/png"))],
        headers=gateway.classifier(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_latest_follows_a_burst_of_publishes(
    repository: tuple[Repository, Path], stack: tuple[ModelServer, Gateway]
) -> None:
    repo, template = repository
    server, gateway = stack
    assert latest(gateway) == 2
    for n in range(6):  # versions 3..8, back to back, as several workers finishing together
        job_id = f"burst-{n}"
        staged = repo.model_dir / MODEL / f".tmp-{job_id}"
        shutil.copytree(template, staged)
        (staged / contract.METADATA_FILE).write_text(json.dumps({"job_id": job_id}))
        repo.publish(staged, MODEL, job_id)
        latest(gateway)  # traffic meanwhile: resolutions made during the burst
    published = time.monotonic()
    newest = wait_for(
        lambda: 8 in versions_available(server.target, MODEL) and time.monotonic(),
        30,
        "version 8 to be served",
        interval=0.02,
    )
    answered = wait_for(lambda: latest(gateway) == 8 and time.monotonic(), 30, "latest == 8")
    lag = answered - newest
    # "latest" follows the newest available version at once (the old gateway kept its earlier
    # resolution, the labelled version, for seconds), and the whole way is within one poll.
    assert lag < 0.5, f"the gateway answered from version 8 {lag:.2f}s after it was served"
    assert answered - published < POLL_S + 2.0, f"{answered - published:.2f}s after the burst"
    assert all(latest(gateway) == 8 for _ in range(5))
