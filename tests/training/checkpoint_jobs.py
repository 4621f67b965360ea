"""What the checkpoint tests share (test_checkpoint_*.py): their Redis database, reading a job's
events, a checkpoint of a real run, and ``fit`` of a tiny model with the job's callbacks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from fdl.jobs import JobStore, new_job_id
from fdl.jobspec import JobSpec
from training import checkpoint_files
from training.time_limit import Deadline

DB = 11
# The job of the in-process tests: job_in_process's spec (1 epoch) with these fields; the quality
# gate says no (nothing exported: not what is tested, and it takes seconds).
SMALL = {"model": "mnist_logreg", "max_train_examples": 256, "publish": {"min_accuracy": 1.0}}


def checkpoint_store(redis_url: str) -> Iterator[JobStore]:
    """For the ``store`` fixture of each test_checkpoint_*.py to ``yield from``: a job store on
    database :data:`DB` of the session's private Redis, not emptied (the tests' job ids and
    queues are their own; a reaper pass acts only on stale runs and the test's queue), so that
    the three files, which pytest-xdist may run at once, never empty it under one another."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}", decode_responses=True)
    try:
        yield JobStore(client)
    finally:
        client.close()


def events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [event for _, event in store.read_events(job_id, count=10_000)]


def notes(store: JobStore, job_id: str) -> list[str]:
    """The messages of the job's ``log`` events."""
    return [e["data"]["message"] for e in events(store, job_id) if e["type"] == "log"]


def epoch_reports(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    """The job's end-of-epoch reports (mid-epoch ones have a ``step``)."""
    found = [e["data"] for e in events(store, job_id) if e["type"] == "progress"]
    return [report for report in found if "step" not in report]


def epochs_reported(store: JobStore, job_id: str) -> list[int]:
    return [report["epoch"] for report in epoch_reports(store, job_id)]


def set_state(checkpoint: Path, **fields: Any) -> None:
    """Change fields of a checkpoint's ``state.json``."""
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps(state | fields))


def train_small(store: JobStore, data_dir: Path, root: Path, job_id: str) -> Any:
    """``train`` alone (its checkpoints, in ``root``, stay) of a new job ``job_id`` of SMALL with
    job_in_process's spec; its outcome."""
    from fdl.architectures import ARCHITECTURES
    from training.data.registry import load_dataset
    from training.trainer import train

    spec = JobSpec(epochs=1, batch_size=32, max_test_examples=64, validation_split=32, **SMALL)
    shape = ARCHITECTURES[spec.model].image_shape
    data = load_dataset("mnist", shape, data_dir, root, False)
    data = data.capped(spec.max_train_examples, spec.max_test_examples)
    store.create(spec.model_dump(mode="json"), job_id)
    return train(spec, data, store, job_id, None, checkpoint_dir=root)


def checkpoint_of_a_run(store: JobStore, data_dir: Path, root: Path) -> tuple[Path, float]:
    """A checkpoint after the one epoch of a run of SMALL (:func:`train_small`), and that
    epoch's loss."""
    job_id = new_job_id()
    outcome = train_small(store, data_dir, root, job_id)
    found = checkpoint_files.newest(root, job_id)
    assert found is not None and found[0] == 1, found
    return found[1], outcome.history[0]["loss"]


class Interrupted(Exception):
    """What :func:`tiny_fit`'s interruption raises out of ``fit``, as a killed run stops."""


def tiny_fit(
    store: JobStore,
    job_id: str,
    root: Path,
    interrupt_after: int | None = None,
    before_checkpoint: bool = False,
    deadline: Deadline | None = None,
) -> tuple[Any, Any]:
    """``fit`` of a tiny model for 3 epochs of one step with the job's progress and checkpoints
    (in ``root``), interrupted once epoch ``interrupt_after`` ended: after its checkpoint, or
    with ``before_checkpoint`` once its end was reported and before its checkpoint was written
    (a run killed between the two). The progress and checkpoint callbacks."""
    import keras
    import numpy as np

    from training.callbacks import JobCallback
    from training.checkpoints import JobCheckpoints

    class Interrupt(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch + 1 == interrupt_after:
                raise Interrupted

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    progress = JobCallback(store, job_id, 3, 8, 1, deadline)
    checkpoints = JobCheckpoints(root, job_id, progress, None, "spec", "float32")
    callbacks = [progress, Interrupt(), checkpoints]
    if not before_checkpoint:
        callbacks = [progress, checkpoints, Interrupt()]
    x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
    with contextlib.suppress(Interrupted):
        model.fit(x, y, 8, 3, 0, callbacks)
    return progress, checkpoints
