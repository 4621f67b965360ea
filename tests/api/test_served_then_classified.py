"""Once ``GET /v1/models/{model}`` reports a new version AVAILABLE, the very next classify by
the model's name answers from it (what `fdl train` promises when it says the version is served).

The gateway caches which version "latest" resolves to (api/metadata_cache.py) while the status
route reads the model server directly: before, a "latest" cached as version 1 just before the
publish went on answering from version 1, still loaded for its ``stable`` label, for up to the
cache's 2 s after the status route reported version 2 AVAILABLE.

Against real processes: a model server polling the repository each second, a gateway and Redis;
a thread classifies by name all along, so the gateway's "latest" is cached when each version is
published, as `fdl train` publishes it (copied aside, then renamed in).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fdl.repository import sync_config
from harness.gateway import BLANK_PNG, Gateway, classify, gateway_running, set_label
from harness.model_server import model_server_running
from harness.models import build_test_model
from harness.procs import wait_for

MODEL = "digits"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    build_test_model(root / MODEL / "1", (28, 28, 1), 10, seed=0, model_name=MODEL)
    sync_config(root)
    return root


@pytest.fixture
def gateway(repository: Path, redis_url: str, logs_dir: Path, tmp_path: Path) -> Iterator[Gateway]:
    with (
        model_server_running("model-server-served", repository, logs_dir, {MODEL: 1}) as server,
        gateway_running(
            "gateway-served", logs_dir, redis_url, server.port, repository, tmp_path / "secrets"
        ) as up,
    ):
        yield up


class ClassifyAllAlong:
    """Classify by name in a thread, one request after another, until stopped."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway, self.stop, self.answers = gateway, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        url = f"{self.gateway.url}/v1/models/{MODEL}:classify"
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                classify(url, self.gateway.admin(), BLANK_PNG, client=client)
                self.answers += 1

    def __enter__(self) -> ClassifyAllAlong:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(60)


def available(gateway: Gateway, version: int) -> bool:
    response = httpx.get(f"{gateway.url}/v1/models/{MODEL}", headers=gateway.admin(), timeout=10)
    assert response.status_code == 200, response.text
    states = {v["version"]: v["state"] for v in response.json()["versions"]}
    return states.get(version) == "AVAILABLE"


def publish(repository: Path, version: int) -> None:
    aside = repository / MODEL / f".incoming-{version}"
    shutil.copytree(repository / MODEL / "1", aside)
    aside.rename(repository / MODEL / str(version))
    sync_config(repository)


def test_the_next_classify_by_name_after_served_answers_from_the_new_version(
    gateway: Gateway, repository: Path
) -> None:
    # Version 1 stays loaded for its label: a stale "latest" would answer from it, not fail.
    assert set_label(gateway, MODEL, "stable", {"version": 1}).status_code == 200
    url = f"{gateway.url}/v1/models/{MODEL}:classify"
    with ClassifyAllAlong(gateway) as loop, httpx.Client(timeout=30) as client:
        wait_for(lambda: loop.answers >= 5, 30, "classify by name answering")
        for version in (2, 3, 4):
            publish(repository, version)
            wait_for(
                lambda v=version: available(gateway, v), 60, f"version {version}", interval=0.02
            )
            answer = classify(url, gateway.admin(), BLANK_PNG, client=client)
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == version, (version, answer.json())
