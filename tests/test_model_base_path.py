"""FDL_SERVING_MODEL_BASE_PATH is one setting of every process that renders models.config: with
it set, the worker's publish, `python -m fdl.repository` and the gateway's promotions write the
same base paths (they used to alternate between it and FDL_MODEL_DIR resolved)."""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import GatewaySettings
from fdl import contract
from fdl import repository as fdl_repository
from fdl.jobs import JobStore
from fdl.jobspec import JobSpec
from fdl.repository import CONFIG_FILE, Repository
from fdl.settings import get_settings as common_settings
from training.job import execute
from training.settings import WorkerSettings

ROOT = "/srv/tf-serving/models"  # where the model server sees the repository


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)
    models = tmp_path / "models"
    (models / "digits" / "1").mkdir(parents=True)
    monkeypatch.setenv("FDL_MODEL_DIR", str(models))
    monkeypatch.setenv("FDL_SERVING_MODEL_BASE_PATH", ROOT)
    common_settings.cache_clear()
    yield models
    common_settings.cache_clear()


def fake_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """execute() without TensorFlow: the dataset, the training and the export are stand-ins; the
    quality gate and the publish are the worker's own."""

    class Data:
        name = "mnist"  # what the quality gate's kind of model reads
        class_names = tuple(str(digit) for digit in range(10))
        x_test, layout, source = range(64), "idx", "/data/mnist"  # its test set, too
        test_sha256 = "0" * 64

        def capped(self, *_: object) -> Data:
            return self

    outcome = types.SimpleNamespace(
        cancelled=False, metrics={"test_accuracy": 0.99}, runtime={"epochs_run": 1}
    )

    def write_model(folder: Path, job_id: str, *_: object) -> None:
        (folder / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"x")
        (folder / contract.METADATA_FILE).write_text(json.dumps({"job_id": job_id}))

    fakes = {
        "training.data.registry": {"load_dataset": lambda *_: Data()},
        "training.trainer": {"train": lambda *_: outcome},
        "training.artifacts": {"write_model": write_model},
    }
    for name, attributes in fakes.items():
        module = types.ModuleType(name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        monkeypatch.setitem(sys.modules, name, module)


def test_worker_and_gateway_render_the_same_base_paths(
    model_dir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = WorkerSettings(_env_file=None)  # type: ignore[call-arg]
    gateway = GatewaySettings(_env_file=None)  # type: ignore[call-arg]
    assert worker.serving_model_base_path == gateway.serving_model_base_path == ROOT

    # The model-config init (`python -m fdl.repository`), as the serving pods run it first.
    assert fdl_repository.main([]) == 0
    init_config = (model_dir / CONFIG_FILE).read_text()
    assert f'base_path: "{ROOT}/digits"' in init_config

    # A worker publishes version 2 of the same model through the real job code.
    fake_training(monkeypatch)
    spec = JobSpec(model="mnist_mlp", dataset="mnist", publish_as="digits")
    store = JobStore.from_url(redis_url)
    job_id = store.create(spec.model_dump(mode="json"))["id"]  # a job with no record stops
    result = execute(job_id, spec, store, worker)
    assert result["version"] == 2 and result["published"] is True
    worker_config = (model_dir / CONFIG_FILE).read_text()

    # The gateway's promotions render with its setting (api.main passes it to the Promoter).
    gateway_config = Repository(gateway.model_dir, gateway.serving_model_base_path).render()
    assert worker_config == gateway_config
    assert f'base_path: "{ROOT}/digits"' in worker_config
    assert str(model_dir.resolve()) not in worker_config + init_config
