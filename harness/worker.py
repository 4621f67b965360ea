"""A real Celery training worker (the command of `fdl up`) on a queue of its own, and the image
folders its datasets read."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import enqueue_training, make_celery
from fdl.stack import WORKER_ARGV as STACK_WORKER_ARGV
from harness.procs import Process, wait_for

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

    def close(self) -> None:
        """Stops the process (``contextlib.closing`` calls it)."""
        self.process.stop()

    def submit(self, **spec: Any) -> str:
        body = JobSpec.model_validate(spec).model_dump(mode="json")
        job_id = new_job_id()
        self.store.create(body, job_id, self.queue)
        enqueue_training(self.app, job_id, self.queue, body.get("max_duration_s"))
        return job_id

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            record = self.store.get(job_id)
            return record if record and record["status"] in statuses else None

        return wait_for(probe, timeout, f"job {job_id} {statuses}", check=self.process.ensure_alive)

    def wait_done(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait_status(job_id, {s.value for s in JobStatus if s.terminal}, timeout)

    def wait_progress(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """The job's first progress report (an epoch done)."""
        return wait_for(
            lambda: (self.store.get(job_id) or {}).get("progress"),
            timeout,
            f"the first progress of job {job_id}",
            check=self.process.ensure_alive,
        )


def start_worker(
    name: str,
    redis_url: str,
    data_dir: Path,
    root: Path,
    logs_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    args: Sequence[str] = (),
) -> Worker:
    """The worker command, with ``args`` added, in ``cwd`` (the repository root unless given:
    `fdl up` runs it in the user's folder), ready once it answers a ping."""
    model_dir, var_dir = root / "models", root / "var"
    # The worker refuses a model folder whose parent is missing (a volume not mounted).
    root.mkdir(parents=True, exist_ok=True)
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
    process = Process(name, [*WORKER_ARGV, *args], logs_dir, full_env, cwd=cwd)
    app = make_celery(redis_url, queue)
    wait_for(lambda: app.control.ping(timeout=0.5), 90, f"{name} ready", check=process.ensure_alive)
    return Worker(process, app, JobStore.from_url(redis_url), model_dir, var_dir, queue)


def worker_running(*args: Any, **kwargs: Any) -> closing[Worker]:
    """:func:`start_worker`, stopped on leaving."""
    return closing(start_worker(*args, **kwargs))


def end_unfinished_jobs(redis_url: str, reason: str) -> list[str]:
    """End every job left queued or running on any database of the Redis at ``redis_url``, so
    that no worker started later adopts one (its reaper re-sends a stale running job, even one
    marked running by no real worker, to its own queue when the record names none): each is
    cancelled, a queued one at once, a running one flagged (a live run stops at its next check)
    and then settled as a lost run is, with ``reason``. The ids of the jobs ended."""
    base = redis_url.rsplit("/", 1)[0]
    with closing(redis.Redis.from_url(redis_url)) as client:
        databases = [int(name.removeprefix("db")) for name in client.info("keyspace")]
    ended: list[str] = []
    for db in databases:
        store = JobStore.from_url(f"{base}/{db}")
        with closing(store.redis):
            groups = store.ids_by_status()
            for job_id in groups.get(JobStatus.QUEUED, []) + groups.get(JobStatus.RUNNING, []):
                record = store.request_cancel(job_id) or {}
                if record.get("status") == JobStatus.RUNNING:
                    attempts = int(record.get("attempts") or 0)
                    # Any heartbeat is older than an hour from now: the run counts as lost.
                    store.settle_lost(job_id, store.now() + 3600, attempts, reason, None, reason)
                ended.append(job_id)
    return ended


def write_image_folder(root: Path, images, labels, class_names, suffix: str = ".png") -> None:
    """One folder per class name, one image file per example (the ``image_folder`` layout)."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.squeeze()).save(folder / f"{index:04d}{suffix}")


def write_stuck_data(data_dir: Path, root: Path) -> Path:
    """A data folder ``root`` with MNIST (from ``data_dir``) and ``stuck``, an image folder whose
    first image is a FIFO that nobody writes: a job on it blocks in ``open`` for good, outside
    any check of the job."""
    import numpy as np

    root.mkdir()
    (root / "mnist").symlink_to(data_dir / "mnist", target_is_directory=True)
    image = np.zeros((28, 28, 1), np.uint8)
    write_image_folder(root / "stuck" / "train", [image, image], [0, 1], ["a", "b"])
    write_image_folder(root / "stuck" / "test", [image], [0], ["a", "b"])
    os.mkfifo(root / "stuck" / "train" / "a" / "0000-fifo.png")
    return root
