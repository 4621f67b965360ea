"""Jobs through a real Celery worker: progress, TensorBoard logs, cancellation, quality gate,
failures with readable errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from fdl.jobs import JobStatus
from fdl.queue import enqueue_training
from harness.worker import MNIST_TINY, Worker

PROGRESS_KEYS = {
    "epoch", "epochs", "loss", "accuracy", "val_loss", "val_accuracy",
    "images_per_second", "eta_seconds",
}  # fmt: skip


def test_job_reports_progress_events_and_tensorboard(
    published_logreg: dict[str, Any], training_worker: Worker
) -> None:
    record = published_logreg["record"]
    assert record["attempts"] == 1
    assert record["started_at"] <= record["finished_at"]
    progress = record["progress"]
    assert set(progress) >= PROGRESS_KEYS
    assert progress["epoch"] == progress["epochs"] == 1
    assert 0 <= progress["accuracy"] <= 1 and progress["val_loss"] > 0
    assert progress["images_per_second"] > 0
    result = record["result"]
    assert result["published"] is True and result["version"] == 1
    assert result["model"] == "contract-logreg" and "min_accuracy" in result["reason"]
    assert {"test_accuracy", "test_loss"} <= set(result["metrics"])

    events = training_worker.store.read_events(record["id"])
    kinds = [(e["type"], e["data"].get("status")) for _, e in events]
    assert kinds[0] == ("status", "queued") and ("status", "running") in kinds
    assert ("progress", None) in kinds and kinds[-1] == ("status", "succeeded")

    logs = Path(result["tensorboard_dir"])
    assert logs == training_worker.var_dir / "tensorboard" / record["id"]
    tags = set()
    for events_file in (logs / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events_file)):
            tags |= {value.tag for value in event.summary.value}
    assert "epoch_loss" in tags
    assert any(tag.endswith("kernel/histogram") for tag in tags)


def test_cancel_stops_training_and_publishes_nothing(training_worker: Worker) -> None:
    job_id = training_worker.submit(
        model="mnist_mlp", publish_as="cancelled-mlp", **{**MNIST_TINY, "epochs": 200}
    )
    training_worker.wait_status(job_id, {"running"})

    def has_progress() -> bool:
        record = training_worker.store.get(job_id)
        return bool(record and record["progress"])

    from harness.procs import wait_for

    wait_for(has_progress, 120, "first progress report")
    training_worker.store.request_cancel(job_id)
    record = training_worker.wait_done(job_id, timeout=60)
    assert record["status"] == JobStatus.CANCELLED
    assert record["progress"]["epoch"] < 200
    assert record["result"] is None
    assert not (training_worker.model_dir / "cancelled-mlp").exists()


def test_quality_gate_both_ways(training_worker: Worker) -> None:
    good = dict(model="mnist_logreg", optimizer={"name": "sgd", "learning_rate": 0.5})
    # An untrained MLP (learning rate ~0) stays near chance level.
    bad = dict(model="mnist_mlp", optimizer={"name": "sgd", "learning_rate": 1e-7})
    first = training_worker.wait_done(
        training_worker.submit(
            publish_as="gated", publish={"min_accuracy": 0.5}, **good, **MNIST_TINY
        )
    )
    assert first["status"] == "succeeded", first
    assert first["result"]["published"] is True and first["result"]["version"] == 1

    low = training_worker.wait_done(
        training_worker.submit(
            publish_as="gated", publish={"min_accuracy": 0.5}, **bad, **MNIST_TINY
        )
    )
    assert low["status"] == "succeeded", low
    assert low["result"]["published"] is False and low["result"]["version"] is None
    assert "below publish.min_accuracy" in low["result"]["reason"]
    assert low["result"]["metrics"]["test_accuracy"] < 0.5

    not_better = training_worker.wait_done(
        training_worker.submit(
            publish_as="gated", publish={"only_if_better": True}, **bad, **MNIST_TINY
        )
    )
    assert not_better["result"]["published"] is False
    assert "not better than the served version 1" in not_better["result"]["reason"]
    assert sorted(p.name for p in (training_worker.model_dir / "gated").iterdir()) == ["1"]


def test_missing_dataset_fails_with_the_reason(training_worker: Worker) -> None:
    record = training_worker.wait_done(
        training_worker.submit(model="mnist_mlp", dataset="no-such-set", **MNIST_TINY)
    )
    assert record["status"] == "failed"
    assert "dataset 'no-such-set' not found" in record["error"]
    assert "train/<class>" in record["error"]


def test_invalid_stored_spec_fails_readably(training_worker: Worker) -> None:
    from fdl.queue import enqueue_training

    job_id = "bad-spec-job"
    training_worker.store.create({"model": "resnet152", "epochs": 1}, job_id)
    enqueue_training(training_worker.app, job_id, training_worker.queue)
    record = training_worker.wait_done(job_id)
    assert record["status"] == "failed"
    assert record["error"].startswith("invalid job spec") and "model" in record["error"]


def test_a_rerun_after_publishing_publishes_no_second_version(
    training_worker: Worker, published_logreg: dict[str, Any]
) -> None:
    """Redis lost the job's success after the version appeared; the reaper re-runs it."""
    job_id = published_logreg["record"]["id"]
    result = published_logreg["record"]["result"]
    model_path = training_worker.model_dir / result["model"]
    before = sorted(p.name for p in model_path.iterdir() if p.name.isdigit())
    # The record as Redis held it when it went away: running, its heartbeat long stale.
    training_worker.store.set_fields(job_id, status="running", heartbeat_at=0, result=None)
    attempts = published_logreg["record"]["attempts"]
    queued = training_worker.store.settle_lost(job_id, time.time(), attempts, "worker lost")
    assert queued == "queued"
    enqueue_training(training_worker.app, job_id, training_worker.queue)
    record = training_worker.wait_done(job_id, timeout=120)
    assert record["status"] == "succeeded", record
    assert record["result"]["version"] == result["version"]
    assert "earlier run of this job" in record["result"]["reason"]
    assert sorted(p.name for p in model_path.iterdir() if p.name.isdigit()) == before
