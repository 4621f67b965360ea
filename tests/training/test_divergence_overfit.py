"""Overfitting is not divergence: weights whose test loss is above 10 ln K but that learned
something (a test accuracy clearly above always answering the test set's largest class) and fit
their training data (a loss there of at most ln K) are published (the quality gate still judges
them), with ``runtime.overfit`` saying why. Before, a test loss over the limit alone failed the
job as "diverged": logistic regression that learned its 20 training images (100%, a training
loss of ~0) and is confidently wrong on some of its 40 test images (70%, a test loss of ~19,
above 6.931) published nothing. A model collapsed onto one class is still refused, its training
loss however low (a first version of this rule published it), and so are weights that fit
neither (Adam at 1 on the MLP: ``test_divergence.py``).

Real Redis, real TensorFlow on MNIST (2-class image folders), real files; the training loss's
measure on tiny Keras models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import redis
import tensorflow as tf

from fdl import contract
from fdl.jobs import JobStore
from harness.worker import write_image_folder
from tests.training.spec_runs import run_spec, settings_for
from training import divergence
from training.data.registry import load_dataset
from training.divergence import (
    ADVICE,
    TrainingDiverged,
    cross_entropy,
    judge_test_loss,
    loss_limit,
    majority_rate,
    sample_loss,
)
from training.preprocess import eval_preprocess

# The tail of the message of weights whose test loss is above 10 ln 2.
ABOVE_2 = ", above 6.931: 10 times the 0.6931 of a model that gives every class the same score"
OVERFIT = ": overfitting, not divergence; the model goes on to the quality gate"


@pytest.fixture(scope="module")
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3", decode_responses=True)
    yield JobStore(client)
    client.close()


def test_weights_that_fit_their_training_data_publish_though_their_test_loss_is_over(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """10 threes and 10 fives to train on, 20 of each to test: SGD at 5 for 40 epochs fits the
    training images (logits of ~120), and the test images it gets wrong it gets confidently
    wrong; it scores 70% on them, clearly above the 50% of always answering one class (65.8%
    needed on 40 images). Published (the default gate asks no minimum accuracy); its test loss
    is reported as measured."""
    mnist = load_dataset("mnist", (28, 28, 1), data_dir, tmp_path / "var", allow_download=False)
    data = tmp_path / "data"
    for split, x, y, count in (("train", mnist.x_train, mnist.y_train, 10),
                               ("test", mnist.x_test, mnist.y_test, 20)):  # fmt: skip
        picked = np.concatenate([np.flatnonzero(y == 3)[:count], np.flatnonzero(y == 5)[:count]])
        write_image_folder(data / "few" / split, x[picked], y[picked] == 5, ["d3", "d5"])
    settings = settings_for(data, tmp_path)
    result, record = run_spec(
        store, "overfit", settings, model="mnist_logreg", dataset="few", epochs=40,
        batch_size=4, validation_split=0, optimizer={"name": "sgd", "learning_rate": 5},
        publish_as="m",
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"], result
    metrics, limit = result["metrics"], loss_limit(2)
    assert metrics["test_loss"] > limit, metrics  # the weights judged: still over the limit
    assert metrics["train_accuracy"] == 1.0 and metrics["train_loss"] < 0.01, metrics
    assert 0.6 <= metrics["test_accuracy"] < 0.9, metrics
    version = settings.model_dir / "m" / str(result["version"])
    metadata = json.loads((version / contract.METADATA_FILE).read_text())
    assert metadata["metrics"]["test_loss"] == metrics["test_loss"]
    note = metadata["runtime"]["overfit"]
    head = f"the test loss of the weights kept was {metrics['test_loss']:.6g} on the 40 test images"
    assert note.startswith(f"{head}{ABOVE_2}, but they fit their training data (a loss of "), note
    assert note.endswith(
        " on the first 20 training examples, under ln 2 = 0.6931) and score "
        f"{metrics['test_accuracy']:.1%} on the test set against 50.0% for always answering its "
        f"largest class{OVERFIT}"
    ), note
    # The job's followers are told it too, as a log event.
    logs = [e["data"]["message"] for _, e in store.read_events("overfit") if e["type"] == "log"]
    assert note in logs, logs


def test_a_collapsed_model_is_refused_though_its_training_loss_is_within_the_limit(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """380 threes and 20 fives to train on, 50 of each to test: Adam at 0.3 on the MLP
    collapses to answering three (50% of the test images, a test loss over a thousand), yet its
    training loss, on data that is 95% threes, is ~0.17, under ln 2 even. It is no better than
    always answering the test set's largest class (50%; 60% would be, two standard errors above
    on 100 images): refused as diverged, without measuring its training loss. Before, it was
    published as overfitting (at rate 1 too: 51%, a training loss of 6.3, under 10 ln 2)."""
    mnist = load_dataset("mnist", (28, 28, 1), data_dir, tmp_path / "var", allow_download=False)
    data = tmp_path / "data"
    for split, x, y, counts in (("train", mnist.x_train, mnist.y_train, (380, 20)),
                                ("test", mnist.x_test, mnist.y_test, (50, 50))):  # fmt: skip
        kept = [np.flatnonzero(y == d)[:n] for d, n in zip((3, 5), counts, strict=True)]
        picked = np.concatenate(kept)
        write_image_folder(data / "skewed" / split, x[picked], y[picked] == 5, ["d3", "d5"])
    settings = settings_for(data, tmp_path)
    result, record = run_spec(
        store, "collapsed", settings, model="mnist_mlp", dataset="skewed", epochs=3,
        batch_size=16, validation_split=0, optimizer={"name": "adam", "learning_rate": 0.3},
        publish_as="m",
    )  # fmt: skip
    assert result is None and record["status"] == "failed", (result, record)
    error = record["error"]
    assert error.startswith(
        "TrainingDiverged: training diverged (the test loss of the weights kept was "
    ), error
    assert f" on the 100 test images{ABOVE_2}; their test accuracy, " in error, error
    assert error.endswith(
        ", is not clearly above the 50.0% of always answering the test set's largest class "
        f"(60.0% or more, two standard errors above it)); nothing was published {ADVICE}"
    ), error
    assert "training loss" not in error, error  # the accuracy decided: no extra pass
    assert not (settings.model_dir / "m").exists()


def test_the_accuracy_then_the_training_loss_decide_and_the_latter_is_measured_only_then() -> None:
    """Weights whose test loss is over the limit (or not finite) are published only when their
    test accuracy is clearly above always answering the test set's largest class and (only then
    measured: a pass over up to 10,000 examples) their training loss is at most ln K. Else
    refused, the message saying which of the two decided. Within the limit, nothing more."""
    measured: list[int] = []

    def train_loss(value: float) -> tuple[float, int]:
        measured.append(1)
        return value, 480

    labels = np.repeat([0, 1], 18)  # 36 test images, half of each: always 0 scores 50%
    good = labels.copy()
    good[:6] = 1  # 30 of 36 right, 83.3%: above 50% + 2 sqrt(0.25 / 36) = 66.7%
    collapsed = np.zeros(36, np.int64)
    assert judge_test_loss(2.0, 10, labels, collapsed, None, None, lambda: train_loss(0.1)) is None
    assert not measured  # a normal job costs nothing more
    note = judge_test_loss(40.0, 2, labels, good, None, 2, lambda: train_loss(0.25))
    assert note == (
        f"the test loss of the weights kept (epoch 3's, restored by early stopping) was 40 on "
        f"the 36 test images{ABOVE_2}, but they fit their training data (a loss of 0.25 on the "
        "first 480 training examples, under ln 2 = 0.6931) and score 83.3% on the test set "
        f"against 50.0% for always answering its largest class{OVERFIT}"
    )
    assert judge_test_loss(math.inf, 2, labels, good, None, None, lambda: train_loss(0.25))
    assert len(measured) == 2
    # A collapsed model: refused by its accuracy, its training loss (under the limit, as a skewed
    # training set allows) not even measured.
    with pytest.raises(TrainingDiverged) as raised:
        judge_test_loss(40.0, 2, labels, collapsed, None, None, lambda: train_loss(0.25))
    assert str(raised.value) == (
        f"training diverged (the test loss of the weights kept was 40 on the 36 test images"
        f"{ABOVE_2}; their test accuracy, 50.0%, is not clearly above the 50.0% of always "
        "answering the test set's largest class (66.7% or more, two standard errors above it)); "
        f"nothing was published {ADVICE}"
    )
    assert len(measured) == 2
    # Weights that do better than the largest class but do not fit their training data: a
    # training loss of 5.93 on 3 classes is within 10 ln 3 but 5.4 times ln 3.
    three = np.repeat([0, 1, 2], 12)
    with pytest.raises(TrainingDiverged) as raised:
        judge_test_loss(11.15, 3, three, three, "the loss was nan after epoch 2", None,
                        lambda: train_loss(5.93))  # fmt: skip
    assert str(raised.value) == (
        "training diverged (the loss was nan after epoch 2; the test loss of the weights kept "
        "was 11.15 on the 36 test images, above 10.99: 10 times the 1.099 of a model that gives "
        "every class the same score; their training loss was 5.93 on the first 480 training "
        "examples, above ln 3 = 1.099, a uniform guess's: they do not fit their training data); "
        f"nothing was published {ADVICE}"
    )
    nan = r"; their training loss was nan on the first 480 training examples: they do not fit "
    with pytest.raises(TrainingDiverged, match=rf"{nan}their training data\); nothing"):
        judge_test_loss(40.0, 2, labels, good, None, None, lambda: train_loss(math.nan))
    assert len(measured) == 4
    with pytest.raises(TrainingDiverged, match=rf"36 test images{ABOVE_2}\); nothing"):
        judge_test_loss(40.0, 2, labels, good, None, None)  # no training data: the test loss


def test_the_majority_rate_is_the_largest_class_share_plus_two_standard_errors() -> None:
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)  # 100 images, 80% of class 0
    accuracy, major, needed = majority_rate(labels, np.zeros(100, np.int64))
    assert (accuracy, major) == (0.8, 0.8)
    assert needed == pytest.approx(0.8 + 2 * math.sqrt(0.8 * 0.2 / 100))  # 0.88
    assert majority_rate(labels, labels)[0] == 1.0


def _own_cross_entropy(model: keras.Model, x: np.ndarray, y: np.ndarray, family: str) -> float:
    """The cross-entropy of ``model``'s own outputs for ``x`` as eval reads it, in NumPy."""
    logits = np.asarray(model(eval_preprocess(tf.constant(x), family), training=False), np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(y)), y].mean())


@pytest.mark.parametrize(
    ("family", "image", "net"),
    [("mnist", (28, 28, 1), (28, 28, 1)), ("cifar32", (32, 32, 3), (32, 32, 3)),
     ("cifar", (32, 32, 3), (24, 24, 3))],
)  # fmt: skip
def test_the_training_loss_is_measured_on_the_images_as_eval_reads_them(
    family: str, image: tuple[int, int, int], net: tuple[int, int, int]
) -> None:
    """``sample_loss`` on uint8 images is the cross-entropy of the model's own predictions for
    them normalized as the test set is (``eval_preprocess``): not for raw 0-255 pixels."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (50, *image), dtype=np.uint8)
    y = rng.integers(0, 3, 50).astype(np.int64)
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input(net), keras.layers.Flatten(), keras.layers.Dense(3)])
    loss, count = sample_loss(model, x, y, family, batch=16)
    assert count == 50
    assert loss == pytest.approx(_own_cross_entropy(model, x, y, family), rel=1e-4)
    if family != "cifar":  # per-image standardization reads raw pixels alike
        raw = np.asarray(model(x.astype(np.float32), training=False), np.float32)
        assert abs(cross_entropy(y, raw) - loss) > 1.0  # the test tells raw pixels apart


def test_the_training_loss_is_measured_on_the_first_train_sample_examples_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most ``TRAIN_SAMPLE`` examples (10,000; 12 here), the first ones: however many
    training images, the pass costs at most about one more test set's evaluation."""
    monkeypatch.setattr(divergence, "TRAIN_SAMPLE", 12)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 2, 30).astype(np.int64)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])  # fmt: skip
    loss, count = sample_loss(model, x, y, "mnist", batch=5)
    assert count == 12
    first = _own_cross_entropy(model, x[:12], y[:12], "mnist")
    assert loss == pytest.approx(first, rel=1e-4)
    assert abs(_own_cross_entropy(model, x, y, "mnist") - first) > 1e-3  # all 30 differ
    assert sample_loss(model, x[:9], y[:9], "mnist", batch=5)[1] == 9  # fewer: all of them
