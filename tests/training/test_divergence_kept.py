"""A run that training stopped on a NaN or infinite loss publishes only weights that are worth
it: those of an epoch whose loss was finite and sane, restored by early stopping. Before, the
test set's outputs alone decided, and weights that made the loss infinite while staying finite
(SGD at learning rate 1.5 with an L2 penalty of 1 doubles them every step: ~1e36 after ~120
steps) went on to the gate and were published as "latest", a 10% model. And a test loss that
overflowed is written as JSON's null, not as Python's ``Infinity``, which JSON has not.

Real Redis, real TensorFlow on MNIST (batches of one, ~100 steps), real files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fdl.jobs import JobStore
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db

DB = 8
# Weights that double every step: the loss is finite for the first ~50 steps, infinite by 120.
EXPLODING: dict[str, Any] = {
    "model": "mnist_logreg",
    "batch_size": 1,
    "max_test_examples": 64,
    "optimizer": {"name": "sgd", "learning_rate": 1.5},
    "regularization": {"l2": 1},
}


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def strict(text: str) -> Any:
    """JSON as any other reader takes it: ``NaN``/``Infinity`` are errors."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_run_whose_loss_became_infinite_fails_and_publishes_nothing(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(data_dir, tmp_path)
    result, record = run_spec(
        store, "exploding", settings, epochs=1, max_train_examples=120, validation_split=0,
        publish_as="m", **EXPLODING,
    )  # fmt: skip
    assert result is None, result
    assert record["status"] == "failed"
    assert record["error"].startswith(
        "TrainingDiverged: training diverged (the loss was inf after epoch 1)"
    )
    assert "nothing was published" in record["error"]
    assert not (settings.model_dir / "m").exists()


def test_early_stoppings_restore_of_an_epoch_whose_loss_was_already_huge_publishes_nothing(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """48 steps an epoch: the first epoch's loss is finite, the second's is not; early stopping
    restores the first epoch's weights, but they had already grown ~2^48-fold (a test loss of
    ~5e15, far above 10 ln 10, and a test accuracy of 11%, below the 16% of always answering the
    largest class of the 64 test images: no overfitting). Before, the version was published
    from them: a 10% model. (An epoch restored with a sane loss is kept and published:
    ``test_divergence.py``.)"""
    settings = settings_for(data_dir, tmp_path)
    result, record = run_spec(
        store, "restored", settings, epochs=3, max_train_examples=60, validation_split=12,
        early_stopping={"patience": 3, "monitor": "val_loss"}, publish_as="m", **EXPLODING,
    )  # fmt: skip
    assert result is None, result
    assert record["status"] == "failed"
    error = record["error"]
    head = (
        "TrainingDiverged: training diverged (the loss was inf after epoch 2; the test loss of "
        "the weights kept (epoch 1's, restored by early stopping) was "
    )
    tail = (
        " on the 64 test images, above 23.03: 10 times the 2.303 of a model that gives every "
        "class the same score; their test accuracy, 10.9%, is not clearly above the 15.6% of "
        "always answering the test set's largest class (24.7% or more, two standard errors "
        "above it)); nothing was published (a lower learning rate, or clipping with max_norm, "
        "usually helps)"
    )
    assert error.startswith(head) and error.endswith(tail), error
    assert float(error.removeprefix(head).removesuffix(tail)) > 1e10  # no model, nor overfitting
    assert not (settings.model_dir / "m").exists()


def test_a_test_loss_that_overflowed_is_written_as_null(tmp_path: Path) -> None:
    """Finite logits far enough apart make the cross-entropy infinite (its log-sum-exp less the
    true class's logit overflows float32); the metrics and both JSON files say null."""
    from training.report import evaluation, strict_json, write_report
    from training.trainer import TrainOutcome, _evaluate

    logits = np.zeros((4, 10), np.float32)
    logits[0, 0], logits[0, 1] = 3e38, -3e38  # the true class is 1
    labels = np.asarray([1, 0, 0, 0])
    outcome = _evaluate(TrainOutcome(None, False, []), logits, labels)
    assert outcome.metrics == {"test_accuracy": 0.75, "test_loss": None}
    report = evaluation(labels, outcome.y_pred, [str(i) for i in range(10)], outcome.metrics)
    write_report(tmp_path, report, [{"epoch": 1, "loss": None, "accuracy": 0.5}], "m")
    assert strict((tmp_path / "evaluation.json").read_text())["test_loss"] is None
    # metadata.json's writer: whatever else is not finite in it is null too
    written = strict(strict_json({"runtime": {"seconds": float("inf")}, "x": [float("nan")]}))
    assert written == {"runtime": {"seconds": None}, "x": [None]}
