"""Fixtures of the training tests: one real Celery worker for the session, what it published,
and small datasets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.jobs import JobStore
from harness.worker import MNIST_TINY, TEST_QUEUE, Worker, start_worker, write_image_folder

# What run_job returned, the job's record, and the model folder it publishes into.
JobRun = tuple[dict[str, Any] | None, dict[str, Any], Path]


@pytest.fixture(scope="session")
def training_worker(
    redis_url: str, data_dir: Path, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[Worker]:
    # A queue of its own: it lives through every later module of this process, whose workers
    # consume TEST_QUEUE on the same Redis; on theirs it took their jobs (every test of it
    # submits to worker.queue).
    queue = {"FDL_TRAINING_QUEUE": f"{TEST_QUEUE}-session-{os.getpid()}"}
    root = tmp_path_factory.mktemp("worker")
    worker = start_worker("training-worker", redis_url, data_dir, root, logs_dir, queue)
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


@pytest.fixture
def tarball(tmp_path: Path, data_dir: Path) -> Path:
    """A CIFAR-10 image-folder export of 400 exact images (300 train, 100 test), as a tarball in
    a data folder, and a file beside them larger than a file the crashing children of
    test_data_leftovers.py may write (the dataset cache tests, test_data_fill_lock.py too)."""
    import os
    import tarfile

    import numpy as np

    from training.data.cifar import CLASS_NAMES

    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        x, y = exact["x_test"][:400], exact["y_test"][:400]
    export = tmp_path / "export"
    write_image_folder(export / "train", x[:300], y[:300], CLASS_NAMES)
    write_image_folder(export / "test", x[300:], y[300:], CLASS_NAMES)
    (export / "notes.bin").write_bytes(os.urandom(600_000))
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    path = folder / "cifar10-png.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("train", "test", "notes.bin"):
            archive.add(export / name, name)
    return path


@pytest.fixture
def job_in_process(tmp_path: Path) -> Callable[..., JobRun]:
    """Runs one small job (1 epoch, batches of 32, 64 test and 32 validation examples, plus
    ``spec_fields``) through the job function in this process, with no worker, under the worker
    settings ``settings_fields`` (e.g. ``{"publish_lock_wait_s": 1}``) change; the caller checks
    what it returns."""
    from fdl.jobspec import JobSpec
    from training.job import run_job
    from training.settings import WorkerSettings

    def run(
        store: JobStore,
        job_id: str,
        data_dir: Path,
        settings_fields: dict[str, Any] | None = None,
        **spec_fields: Any,
    ) -> JobRun:
        settings = WorkerSettings(
            redis_url="redis://unused",
            data_dir=data_dir,
            model_dir=tmp_path / "models",
            var_dir=tmp_path / "var",
            download=False,
            **(settings_fields or {}),
        )
        spec = JobSpec(
            epochs=1, batch_size=32, max_test_examples=64, validation_split=32, **spec_fields
        )
        store.create(spec.model_dump(mode="json"), job_id)
        result = run_job(job_id, store, settings)
        return result, store.get(job_id), settings.model_dir

    return run
