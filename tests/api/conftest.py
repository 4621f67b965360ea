"""Shared real processes for the gateway tests: tiny models, a model server, a gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fdl import contract
from fdl.repository import sync_config
from tests.api.support import (
    Gateway,
    ModelServer,
    start_gateway,
    start_model_server,
    wait_for_models,
)

PHOTO_CLASSES = ["cat", "dog", "bird"]
TRAINING_METADATA = {
    "job_id": "job-abc123",
    "model": "digits",
    "architecture": "mnist_logreg",
    "spec": {"model": "mnist_logreg", "epochs": 1},
    "class_names": [str(i) for i in range(10)],
    "metrics": {"test_accuracy": 0.91, "test_loss": 0.3},
    "history": {"loss": [0.5, 0.3]},
}


def build_repository(root: Path) -> Path:
    """Tiny contract-conforming models: digits (28x28x1, v1+v2), photos (32x32x3), promo."""
    from tests.support.models import build_test_model

    build_test_model(root / "digits" / "1", (28, 28, 1), 10, seed=0, model_name="digits")
    build_test_model(root / "digits" / "2", (28, 28, 1), 10, seed=1, model_name="digits")
    (root / "digits" / "2" / contract.METADATA_FILE).write_text(json.dumps(TRAINING_METADATA))
    build_test_model(
        root / "photos" / "1",
        (32, 32, 3),
        3,
        seed=2,
        class_names=PHOTO_CLASSES,
        model_name="photos",
    )
    for version in (1, 2, 3):
        build_test_model(root / "promo" / str(version), (28, 28, 1), 10, seed=version)
    (root / "promo" / "3" / contract.METADATA_FILE).unlink()  # metadata is optional
    sync_config(root)
    return root


@pytest.fixture(scope="session")
def pristine_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once; tests that change a repository copy it."""
    return build_repository(tmp_path_factory.mktemp("pristine") / "models")


def copy_repository(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    sync_config(target)  # base paths point at the copy
    return target


@pytest.fixture(scope="session")
def model_dir(pristine_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(pristine_repository, tmp_path_factory.mktemp("repo") / "models")


@pytest.fixture(scope="session")
def model_server(model_dir: Path, logs_dir: Path) -> Iterator[ModelServer]:
    server = start_model_server("model-server", model_dir, logs_dir)
    try:
        wait_for_models(server, {"digits": 2, "photos": 1, "promo": 3})
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="session")
def gateway(
    redis_url: str,
    model_server: ModelServer,
    model_dir: Path,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """Keyed classification, a generous rate limit."""
    running = start_gateway(
        "gateway",
        logs_dir,
        redis_url,
        model_server.port,
        model_dir,
        tmp_path_factory.mktemp("secrets"),
    )
    try:
        # Label digits v1 "stable" through the API: it stays loaded beside the latest, v2.
        response = httpx.post(
            f"{running.url}/v1/models/digits/labels/stable",
            json={"version": 1},
            headers=running.admin(),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        yield running
    finally:
        running.process.stop()
