"""A job whose loss diverges fails with the reason and publishes nothing: a model exported from
NaN weights would answer NaN for every image, and "latest" would follow it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from fdl.jobs import JobStore
from training.callbacks import JobCallback, TrainingDiverged, divergence
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
    assert "the loss was nan" in record["error"]
    assert not (model_dir / "m").exists()


def test_a_non_finite_loss_stops_training_and_non_finite_outputs_fail_the_job(
    store: JobStore,
) -> None:
    import keras

    assert divergence(2.5, "after epoch 1") is None and divergence(None, "after epoch 1") is None
    for value in (float("nan"), float("inf"), np.float32("nan")):
        assert divergence(value, "after epoch 3") == f"the loss was {float(value)} after epoch 3"
    # The callback stops the run rather than raising: early stopping's best weights, restored
    # when training ends, may still be good; the test set's outputs decide.
    store.create({"model": "mnist_logreg"}, "nan-loss")
    callback = JobCallback(store, "nan-loss", epochs=5, train_examples=10, steps=1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.stop_training = False  # as fit sets it
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 0.5})
    assert callback.diverged is None and not callback.model.stop_training
    callback.on_epoch_end(1, {"loss": float("nan")})
    assert callback.diverged == "the loss was nan after epoch 2" and callback.model.stop_training
    logits = np.zeros((4, 10), np.float32)
    finite = _evaluate(TrainOutcome(None, False, []), logits, np.zeros(4, np.int64), "x")
    assert finite.metrics["test_accuracy"] == 1.0
    logits[2, 5] = np.nan
    with pytest.raises(TrainingDiverged, match=r"\(the loss was nan\).*for 1 of 4 test images"):
        _evaluate(TrainOutcome(None, False, []), logits, np.zeros(4, np.int64), "the loss was nan")
