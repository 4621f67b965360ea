"""A job whose loss diverges fails with the reason and publishes nothing: a model exported from
NaN weights would answer NaN for every image, and "latest" would follow it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from fdl.jobs import JobStore
from training.callbacks import TrainingDiverged, check_loss
from training.trainer import TrainOutcome, _evaluate


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3", decode_responses=True)
    yield JobStore(client)
    client.close()


def test_a_job_whose_loss_diverges_fails_and_publishes_nothing(
    store: JobStore, data_dir: Path, job_in_process
) -> None:
    result, record, model_dir = job_in_process(
        store, "diverging", data_dir, model="mnist_mlp", dataset="mnist",
        max_train_examples=512, publish_as="m",
        optimizer={"name": "sgd", "learning_rate": 10},
    )  # fmt: skip
    assert result is None
    assert record["status"] == "failed"
    assert "TrainingDiverged" in record["error"] and "nothing was published" in record["error"]
    assert not (model_dir / "m").exists()


def test_a_non_finite_loss_or_output_is_divergence() -> None:
    check_loss(2.5, "after epoch 1")
    check_loss(None, "after epoch 1")
    for value in (float("nan"), float("inf"), np.float32("nan")):
        with pytest.raises(TrainingDiverged, match="after epoch 3"):
            check_loss(value, "after epoch 3")
    logits = np.zeros((4, 10), np.float32)
    logits[2, 5] = np.nan
    with pytest.raises(TrainingDiverged, match="for 1 of 4 test images"):
        _evaluate(TrainOutcome(None, False, []), logits, np.zeros(4, np.int64))
