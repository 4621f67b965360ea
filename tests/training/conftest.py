"""Fixtures of the training tests: one real Celery worker for the session, and helpers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import enqueue_training, make_celery
from fdl.stack import WORKER_ARGV as STACK_WORKER_ARGV
from tests.support.procs import Process, wait_for

# The worker command of `fdl up`, Docker and the docs, verbatim.
WORKER_ARGV = list(STACK_WORKER_ARGV)
# Test workers consume a queue of their own: the gateways of other test modules enqueue fuzzed
# and sample jobs (hundreds of CIFAR epochs) on the default queue of the same session Redis.
TEST_QUEUE = "fdl-tests-training"
MNIST_TINY: dict[str, Any] = {
    "epochs": 1,
    "batch_size": 64,
    "max_train_examples": 1200,
    "max_test_examples": 300,
    "validation_split": 200,
}


@dataclass
class Worker:
    process: Process
    app: Celery
    store: JobStore
    model_dir: Path
    var_dir: Path
    queue: str = TEST_QUEUE

    def submit(self, **spec: Any) -> str:
        body = JobSpec.model_validate(spec).model_dump(mode="json")
        job_id = new_job_id()
        self.store.create(body, job_id)
        enqueue_training(self.app, job_id, self.queue)
        return job_id

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            record = self.store.get(job_id)
            return record if record and record["status"] in statuses else None

        return wait_for(probe, timeout, f"job {job_id} {statuses}", check=self.process.ensure_alive)

    def wait_done(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_status(job_id, {s.value for s in JobStatus if s.terminal}, timeout)


def start_worker(
    name: str,
    redis_url: str,
    data_dir: Path,
    root: Path,
    logs_dir: Path,
    env: dict[str, str] | None = None,
) -> Worker:
    model_dir, var_dir = root / "models", root / "var"
    full_env = {
        "FDL_REDIS_URL": redis_url,
        "FDL_MODEL_DIR": str(model_dir),
        "FDL_DATA_DIR": str(data_dir),
        "FDL_VAR_DIR": str(var_dir),
        "FDL_DOWNLOAD": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "FDL_TRAINING_QUEUE": TEST_QUEUE,
        **(env or {}),
    }
    queue = full_env["FDL_TRAINING_QUEUE"]
    process = Process(name, WORKER_ARGV, logs_dir, full_env)
    app = make_celery(redis_url, queue)
    wait_for(lambda: app.control.ping(timeout=0.5), 90, f"{name} ready", check=process.ensure_alive)
    return Worker(process, app, JobStore.from_url(redis_url), model_dir, var_dir, queue)


@pytest.fixture(scope="session")
def training_worker(
    redis_url: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[Worker]:
    worker = start_worker(
        "training-worker", redis_url, data_dir, tmp_path_factory.mktemp("worker"), logs_dir
    )
    yield worker
    worker.process.stop()


@pytest.fixture(scope="session")
def published_logreg(training_worker: Worker) -> dict[str, Any]:
    """One real job through the worker; several tests inspect what it published."""
    started = time.time()
    job_id = training_worker.submit(
        model="mnist_logreg",
        publish_as="contract-logreg",
        optimizer={"name": "sgd", "learning_rate": 0.5},
        **MNIST_TINY,
    )
    record = training_worker.wait_done(job_id, timeout=180)
    assert record["status"] == "succeeded", (record, training_worker.process.log_tail())
    result = record["result"]
    path = training_worker.model_dir / result["model"] / str(result["version"])
    return {"record": record, "path": path, "submitted_at": started}


def write_image_folder(root: Path, images, labels, class_names, suffix: str = ".png") -> None:
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.squeeze()).save(folder / f"{index:04d}{suffix}")


@pytest.fixture(scope="session")
def small_data_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with ``mnist`` (the real one), ``tinycifar`` (400 exact CIFAR-10 images as an
    image folder) and
    ``shapes`` (3 user classes of RGB 40x40 images)."""
    import numpy as np

    from training.data.cifar import CLASS_NAMES

    root = tmp_path_factory.mktemp("small-data")
    (root / "mnist").symlink_to(data_dir / "mnist", target_is_directory=True)
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        x, y = exact["x_test"], exact["y_test"]
    write_image_folder(root / "tinycifar" / "train", x[:300], y[:300], CLASS_NAMES)
    write_image_folder(root / "tinycifar" / "test", x[300:400], y[300:400], CLASS_NAMES)
    rng = np.random.default_rng(0)
    names = ("circle", "noise", "stripes")
    for split, count in (("train", 60), ("test", 15)):
        images, labels = [], []
        for i in range(count):
            label = i % 3
            img = np.zeros((40, 40, 3), np.uint8)
            if label == 0:
                yy, xx = np.mgrid[:40, :40]
                img[(yy - 20) ** 2 + (xx - 20) ** 2 < 150] = 255
            elif label == 1:
                img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            else:
                img[:, ::4] = 200
            images.append(img)
            labels.append(label)
        write_image_folder(root / "shapes" / split, images, labels, names)
    return root
