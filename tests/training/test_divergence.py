"""A job whose loss diverges fails with the reason and publishes nothing: a model exported from
NaN weights would answer NaN for every image, and "latest" would follow it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import redis

from fdl import contract
from fdl.jobs import JobStore
from harness.worker import write_image_folder
from tests.training.spec_runs import run_spec, settings_for
from training.callbacks import JobCallback, TrainingDiverged, divergence
from training.data.registry import load_dataset
from training.divergence import ADVICE, judge_run, loss_limit, restored_epoch
from training.trainer import TrainOutcome, _evaluate

# The tail of the message of weights whose test loss is above 10 ln K, for 10 and 2 classes.
ABOVE_10 = ", above 23.03: 10 times the 2.303 of a model that gives every class the same score"
ABOVE_2 = ", above 6.931: 10 times the 0.6931 of a model that gives every class the same score"


def judged_loss(error: str, images: int) -> float:
    """The test loss that a divergence message says the weights kept had."""
    head, _, _ = error.partition(f" on the {images} test images, above ")
    return float(head.rsplit(" was ", 1)[1])


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


def test_a_job_whose_loss_explodes_but_stays_finite_fails_and_publishes_nothing(
    store: JobStore, data_dir: Path, job_in_process
) -> None:
    """Adam at rate 1 on the MLP: a loss in the hundreds, never NaN. Before, the run was
    published as latest, a 10% model answering one class for every image. The weights kept are
    judged by their loss on the test set (64 images here), and, as it is over the limit, by
    their test accuracy: no better than always answering the largest class of the 64 (10 of
    them), the run diverged (it did not overfit; its training loss is not measured)."""
    result, record, model_dir = job_in_process(
        store, "exploding-finite", data_dir, model="mnist_mlp", dataset="mnist",
        max_train_examples=512, publish_as="m", optimizer={"name": "adam", "learning_rate": 1},
    )  # fmt: skip
    assert result is None
    assert record["status"] == "failed"
    error = record["error"]
    assert error.startswith(
        "TrainingDiverged: training diverged (the test loss of the weights kept was "
    ), error
    assert error.endswith(
        ", is not clearly above the 15.6% of always answering the test set's largest class "
        f"(24.7% or more, two standard errors above it)); nothing was published {ADVICE}"
    ), error
    assert f"{ABOVE_10}; their test accuracy, " in error, error
    assert judged_loss(error, 64) > 10 * loss_limit(10)  # far above: no model
    assert "training loss" not in error, error  # the accuracy decided: no extra pass
    assert not (model_dir / "m").exists()


def test_a_first_epoch_whose_mean_loss_is_above_the_limit_publishes_a_model_that_works(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """SGD at 2 on logistic regression, 3s against 5s, one epoch (the default) of 13 steps: the
    first steps spike, and the epoch's mean loss is ~10, above 10 ln 2, while the weights at its
    end are a model of ~92% with a test loss of ~0.4. Before, the epoch's mean was judged and
    the job failed ("the loss was 10.04 after epoch 1, above 6.931")."""
    mnist = load_dataset("mnist", (28, 28, 1), data_dir, tmp_path / "var", allow_download=False)
    data = tmp_path / "data"
    for split, x, y, count in (("train", mnist.x_train, mnist.y_train, 200),
                               ("test", mnist.x_test, mnist.y_test, 20)):  # fmt: skip
        picked = np.concatenate([np.flatnonzero(y == 3)[:count], np.flatnonzero(y == 5)[:count]])
        write_image_folder(data / "threes" / split, x[picked], y[picked] == 5, ["d3", "d5"])
    settings = settings_for(data, tmp_path)
    result, record = run_spec(
        store, "spiking", settings, model="mnist_logreg", dataset="threes", batch_size=32,
        validation_split=0, optimizer={"name": "sgd", "learning_rate": 2}, publish_as="m",
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"]
    metrics, limit = result["metrics"], loss_limit(2)
    assert metrics["train_loss"] > limit > metrics["test_loss"], metrics
    assert metrics["test_accuracy"] >= 0.85, metrics
    version = settings.model_dir / "m" / str(result["version"])
    metadata = json.loads((version / contract.METADATA_FILE).read_text())
    # What was judged, and against what: the test loss of the weights published, the limit.
    assert metadata["metrics"]["test_loss"] == metrics["test_loss"]
    assert metadata["runtime"]["loss_limit"] == round(limit, 6)


def test_a_regularised_run_is_judged_on_its_loss_without_the_penalty(
    store: JobStore, data_dir: Path, job_in_process
) -> None:
    """L2 0.1 on the MLP's kernels adds ~80 to the loss that Keras reports: far above the
    limit, while the model learns (its cross-entropy is ~2). It publishes."""
    result, record, _ = job_in_process(
        store, "regularised", data_dir, model="mnist_mlp", dataset="mnist",
        max_train_examples=512, publish_as="m", optimizer={"name": "sgd", "learning_rate": 0.1},
        regularization={"l2": 0.1},
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"]
    assert result["metrics"]["train_loss"] > loss_limit(10) > result["metrics"]["test_loss"]


def _fit(
    store: JobStore, job_id: str, scales: list[float], patience: int | None
) -> tuple[keras.Model, keras.callbacks.EarlyStopping | None, JobCallback, list[np.ndarray]]:
    """A tiny real fit, 4 steps an epoch, whose epochs' inputs are scaled by ``scales`` (a
    blow-up from the second epoch on); validation on the unscaled inputs. Returns the model,
    the early stopping (with ``patience``), the job's callback and the first epoch's weights."""
    import tensorflow as tf

    x, y = _inputs()
    xs = np.concatenate([x * scale for scale in scales])
    train = tf.data.Dataset.from_tensor_slices((xs, np.tile(y, len(scales)))).batch(8)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    store.create({"model": "mnist_logreg"}, job_id)
    progress = JobCallback(store, job_id, len(scales), 32, 4)
    first: list[np.ndarray] = []

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None) -> None:
            if epoch == 0:
                first.extend(self.model.get_weights())

    callbacks: list[keras.callbacks.Callback] = [progress, Keep()]
    stopper = None
    if patience is not None:
        stopper = keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)
        callbacks.append(stopper)
    model.fit(train, steps_per_epoch=4, validation_data=(x, y), epochs=len(scales),
              callbacks=callbacks, verbose=0)  # fmt: skip
    return model, stopper, progress, first


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """32 inputs of 4 numbers, of class 1 when the first is above 0.5."""
    x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
    return x, (x[:, 0] > 0.5).astype(np.int64)


def _tested(
    model: keras.Model, stopper: keras.callbacks.EarlyStopping | None, progress: JobCallback
) -> TrainOutcome:
    """What the trainer does after such a fit: judge the run, then the weights kept by their
    loss on the (unscaled) inputs as the test set."""
    judge_run(model, stopper, progress.history, progress.diverged)
    x, y = _inputs()
    logits = np.asarray(model.predict(x, verbose=0), np.float32)
    outcome = TrainOutcome(model, False, progress.history)
    return _evaluate(outcome, logits, y, progress.diverged, restored_epoch(stopper), 2)


def test_the_kept_weights_test_loss_decides_not_any_epochs_mean(store: JobStore) -> None:
    """Epochs 2 and 3 blow up (finite); the run trains on. Early stopping restored epoch 1,
    whose weights are a model: they are kept and pass. Without early stopping, the last
    epoch's are kept, and their test loss says they are no model; nor are those of an epoch
    restored from inside the blow-up."""
    limit = loss_limit(2)
    model, stopper, progress, first = _fit(store, "restored-sane", [1, 1e4, 1e4], patience=5)
    losses = [entry["loss"] for entry in progress.history]
    assert losses[0] < limit < min(losses[1:]) and progress.diverged is None, losses
    assert restored_epoch(stopper) == 0
    assert judge_run(model, stopper, progress.history, progress.diverged) is None  # all epochs
    outcome = _tested(model, stopper, progress)
    assert outcome.metrics["test_loss"] < limit
    assert outcome.metrics["train_loss"] == losses[0]  # the restored epoch's
    for kept, weights in zip(model.get_weights(), first, strict=True):
        np.testing.assert_array_equal(kept, weights)

    model, _, progress, _ = _fit(store, "last-exploded", [1, 1e4, 1e4], patience=None)
    with pytest.raises(TrainingDiverged) as raised:
        _tested(model, None, progress)
    error = str(raised.value)
    assert error.startswith("training diverged (the test loss of the weights kept was "), error
    assert error.endswith(f" on the 32 test images{ABOVE_2}); nothing was published {ADVICE}")
    assert judged_loss(error, 32) > limit

    model, stopper, progress, _ = _fit(store, "restored-exploded", [1e4, 1e4], patience=5)
    best = restored_epoch(stopper)
    assert best is not None
    with pytest.raises(TrainingDiverged) as raised:
        _tested(model, stopper, progress)
    assert str(raised.value).startswith(
        f"training diverged (the test loss of the weights kept (epoch {best + 1}'s, restored by "
        "early stopping) was "
    )


def test_early_stopping_restores_an_epoch_before_a_non_finite_loss(store: JobStore) -> None:
    """The second epoch's loss is infinite: training stops, and the first epoch's weights,
    restored by early stopping, are kept; without early stopping the run fails."""
    model, stopper, progress, first = _fit(store, "inf-restored", [1, 1e38, 1], patience=5)
    assert progress.diverged is not None and len(progress.history) == 2
    assert judge_run(model, stopper, progress.history, progress.diverged) == (
        f"training stopped: {progress.diverged}; early stopping restored the weights of epoch 1"
    )
    for kept, weights in zip(model.get_weights(), first, strict=True):
        np.testing.assert_array_equal(kept, weights)
    assert _tested(model, stopper, progress).metrics["test_loss"] < loss_limit(2)
    model, _, progress, _ = _fit(store, "inf-lost", [1, 1e38, 1], patience=None)
    with pytest.raises(TrainingDiverged, match="and no epoch whose loss was finite was restored"):
        judge_run(model, None, progress.history, progress.diverged)
