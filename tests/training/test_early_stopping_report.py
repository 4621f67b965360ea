"""Early stopping publishes its best epoch's weights (Keras restores them when training ends):
the result and ``metadata.json`` report that epoch's training and validation metrics, name it
(``runtime.restored_epoch``) and say why training stopped (``runtime.stopped_early``). Before,
the last epoch's metrics were reported for the best epoch's weights, and ``stopped_early`` was
absent.

Real Redis, real TensorFlow on MNIST (logistic regression, 200 images, 4 epochs), the published
SavedModel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fdl import contract
from fdl.jobs import JobStore
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db
from training.data.registry import load_dataset

DB = 12
VALIDATION = 40  # the first 40 training images (training.pipeline.split_validation)


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def test_the_restored_epochs_metrics_are_reported(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """Adam 0.02 on 160 images overfits from epoch 4 on: val_loss is lowest after epoch 3,
    training stops after epoch 4 (patience 1), and epoch 3's weights are published."""
    import tensorflow as tf

    settings = settings_for(data_dir, tmp_path)
    result, record = run_spec(
        store, "stopped", settings, model="mnist_logreg", epochs=8, batch_size=16,
        max_train_examples=200, max_test_examples=64, validation_split=VALIDATION,
        optimizer={"name": "adam", "learning_rate": 0.02}, early_stopping={"patience": 1},
        publish_as="m",
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"]
    version = settings.model_dir / "m" / str(result["version"])
    metadata = json.loads((version / contract.METADATA_FILE).read_text())
    history, runtime = metadata["history"], metadata["runtime"]
    val_losses = [entry["val_loss"] for entry in history]
    best = int(np.argmin(val_losses))
    assert 0 < best < len(history) - 1, val_losses  # an earlier epoch than the last is restored
    assert runtime["restored_epoch"] == best + 1 and runtime["epochs_run"] == len(history)
    assert runtime["stopped_early"] == (
        f"early stopping after epoch {len(history)}: val_loss did not improve for 1 epoch"
    )
    kept = history[best]
    for metrics in (result["metrics"], metadata["metrics"]):
        assert (
            metrics["train_loss"] == kept["loss"] and metrics["train_accuracy"] == kept["accuracy"]
        )
        assert metrics["val_loss"] == kept["val_loss"]
        assert metrics["val_accuracy"] == kept["val_accuracy"]
    # The published weights are that epoch's: they score the validation images as it did.
    mnist = load_dataset("mnist", (28, 28, 1), data_dir, tmp_path, allow_download=False)
    images, labels = mnist.x_train[:VALIDATION], mnist.y_train[:VALIDATION]
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    scores = serve(**{contract.INPUT_KEY: tf.constant(images)})[contract.SCORES_KEY].numpy()
    loss = float(-np.log(scores[np.arange(VALIDATION), labels]).mean())
    assert loss == pytest.approx(kept["val_loss"], rel=1e-3)
    assert float((scores.argmax(axis=1) == labels).mean()) == pytest.approx(kept["val_accuracy"])
