"""When a training run's loss diverged, and whether its weights are still worth testing: a run
whose loss diverged fails and publishes nothing, unless early stopping restored an epoch before
it (:class:`training.callbacks.JobCallback` stops the run; :mod:`training.trainer` decides),
and so does a run whose weights kept are no model by their test loss, unless their test accuracy
and their training loss say that they overfit."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from training.pipeline import eval_dataset

# Weights whose loss is above this many times chance level's are no model, the loss finite or
# not: a model that gives every one of K classes the same score has a cross-entropy of ln K.
# The weights kept are judged, on the test set after training (:func:`judge_test_loss`): their
# cross-entropy there, without the regularization penalty. Before, only NaN and infinity
# counted: Adam at rate 1 on mnist_mlp (a loss of 460, 10% accuracy) was published as latest.
# An epoch's mean loss is no such judge: it includes a run's first steps, which may spike far
# above the limit in a run that learns (SGD at 5 on logistic regression, one epoch: a mean of
# 8.9 on two classes, a model of 91%).
DIVERGED_OVER_CHANCE = 10
# The metric that reports the loss without the regularization penalty (L1/L2 on the kernels,
# which Keras adds to the reported loss), compiled where the spec sets one
# (training.recipes.compile_for_recipe): how the model fits its data, in its history and
# TensorBoard (the test loss that is judged has no penalty either).
DATA_LOSS = "data_loss"
# A test loss above the limit is not divergence when the weights learned something and are only
# confidently wrong on some test images (logistic regression fit to 10 threes and 10 fives, SGD
# at 5 for 40 epochs: 100% on them, 70% on 40 test images, a test loss of 19, over 10 ln 2 =
# 6.931): their test accuracy is clearly above always answering the largest class (a collapsed
# model is not: Adam at 1 on the MLP, trained on 95% threes, 51% on a 50/50 test set, with a
# training loss under 10 ln 2) and they fit their training data, a loss there of at most ln K
# (logistic regression at SGD 8 on 3 classes, one epoch: 84% on the test set but a training
# loss of 5.9, 5.4 times a uniform guess's, is no fit). Only when the accuracy passes (a rare
# path: a normal job costs nothing more) their cross-entropy is measured, on the first this many
# training examples, through the test set's pipeline: as many as MNIST's and CIFAR-10's test
# sets, so the extra pass costs at most about one more such test set's evaluation, whatever the
# size of the training set.
TRAIN_SAMPLE = 10_000


ADVICE = "(a lower learning rate, or clipping with max_norm, usually helps)"


class TrainingDiverged(RuntimeError):
    """The trained model answers NaN or infinity, or the loss diverged: its weights are no
    longer numbers, or no model. The job fails and publishes nothing."""


def loss_limit(classes: int) -> float:
    """The test loss above which the weights kept are no model, for ``classes`` classes."""
    return DIVERGED_OVER_CHANCE * math.log(max(classes, 2))


def divergence(
    value: Any, where: str, limit: float | None = None, what: str = "the loss"
) -> str | None:
    """What to tell the user when the reported loss is not a finite number, or above ``limit``
    (:func:`loss_limit`), else None."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return f"{what} was {value} {where}"
    if limit is not None and value > limit:
        chance = limit / DIVERGED_OVER_CHANCE
        return (
            f"{what} was {value:.6g} {where}, above {limit:.4g}: {DIVERGED_OVER_CHANCE} times "
            f"the {chance:.4g} of a model that gives every class the same score"
        )
    return None


def restored_epoch(stopper: keras.callbacks.EarlyStopping | None) -> int | None:
    """The epoch (from 0) whose weights early stopping put back when training ended (Keras
    restores its best epoch's whenever it kept them, stopped early or not), else None."""
    if stopper is None or stopper.best_weights is None:
        return None
    return getattr(stopper, "best_epoch", None)


def weights_kept(
    model: keras.Model,
    stopper: keras.callbacks.EarlyStopping | None,
    history: list[dict[str, Any]],
) -> str | None:
    """After training stopped on a NaN or infinite loss: why the model's weights are still
    worth the test set's judgement, else None (the run failed: weights that made the loss
    non-finite are no model). Early stopping restored the weights of its best epoch (Keras does
    when training ends), whose loss and monitored value were finite (whether they are a model,
    their test loss says: :func:`judge_test_loss`); or, without such a restore, the optimizer
    scales the loss (mixed float16), skipping each step whose gradients were not finite, so that
    the weights are those from before it."""
    best = restored_epoch(stopper)
    if stopper is not None and best is not None:
        entry = history[best] if best < len(history) else {}
        if entry.get("loss") is not None and entry.get(stopper.monitor) is not None:
            model.set_weights(stopper.best_weights)  # as Keras did at the end of training
            return f"early stopping restored the weights of epoch {best + 1}"
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        return "the loss scaling skipped the steps whose gradients were not finite"
    return None


def judge_run(
    model: keras.Model,
    stopper: keras.callbacks.EarlyStopping | None,
    history: list[dict[str, Any]],
    diverged: str | None,
) -> str | None:
    """After training: raises :class:`TrainingDiverged` when training stopped on a NaN or
    infinite loss (``diverged`` says where) and no weights worth testing are left
    (:func:`weights_kept` decides), else says why training stopped early
    (``runtime.stopped_early``; None: it ran its epochs). The weights kept are judged on the test
    set afterwards (:func:`judge_test_loss`)."""
    if diverged:
        kept = weights_kept(model, stopper, history)
        if kept is None:
            raise TrainingDiverged(
                f"training diverged ({diverged}) and no epoch whose loss was finite was restored "
                f"(early stopping); nothing was published {ADVICE}"
            )
        return f"training stopped: {diverged}; {kept}"
    if stopper is not None and stopper.stopped_epoch > 0:
        return (
            f"early stopping after epoch {stopper.stopped_epoch + 1}: {stopper.monitor} did not "
            f"improve for {stopper.patience} epoch{'s' if stopper.patience != 1 else ''}"
        )
    return None


def cross_entropy(labels: np.ndarray, logits: np.ndarray) -> float:
    """The mean cross-entropy of ``logits`` for ``labels`` (no regularization penalty)."""
    return float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))


def sample_loss(
    model: keras.Model, x: np.ndarray, y: np.ndarray, family: str, batch: int
) -> tuple[float, int]:
    """The cross-entropy of ``model`` on the first :data:`TRAIN_SAMPLE` examples of ``x`` (the
    training data, read as the test set is: ``eval_dataset``), and how many those were."""
    count = min(len(x), TRAIN_SAMPLE)
    logits = model.predict(eval_dataset(x[:count], y[:count], family, batch), verbose=0)
    return cross_entropy(y[:count], np.asarray(logits, np.float32)), count


def majority_rate(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """The test accuracy of ``predicted``, the share of the largest class in ``labels`` (always
    answering it scores that), and the accuracy clearly better than that: two binomial standard
    errors above it, on ``len(labels)`` images."""
    tested = max(len(labels), 1)
    accuracy = float((predicted == labels).sum() / tested)
    major = float(np.bincount(labels).max() / tested) if len(labels) else 1.0
    return accuracy, major, major + 2 * math.sqrt(major * (1 - major) / tested)


def judge_test_loss(
    test_loss: float,
    classes: int,
    labels: np.ndarray,
    predicted: np.ndarray,
    diverged: str | None,
    restored: int | None,
    train_loss: Callable[[], tuple[float, int]] | None = None,
) -> str | None:
    """Raises :class:`TrainingDiverged` when the weights kept are no model: their cross-entropy
    on the test images (``labels``; from their logits: no regularization penalty), ``test_loss``,
    is not finite or above :func:`loss_limit`, unless they learned something and are only
    confidently wrong on some test images (overfitting, not divergence): both (b) their test
    accuracy (``predicted``) is clearly better than always answering the test set's largest
    class (:func:`majority_rate`; checked first: it needs no extra pass, so a collapsed model
    costs nothing more), and (a) they fit their training data, their cross-entropy there, which
    ``train_loss`` measures (:func:`sample_loss`: the loss and how many examples; called only
    then; without it the test loss alone decides), being at most ln K, a uniform guess's. Then
    returns what to tell the user (``runtime.overfit``), else None. ``diverged``: where training
    stopped on a NaN or infinite loss; ``restored``: the epoch (from 0) whose weights early
    stopping restored."""
    what = "the test loss of the weights kept"
    if restored is not None:
        what += f" (epoch {restored + 1}'s, restored by early stopping)"
    images = f"{len(labels)} test image{'s' if len(labels) != 1 else ''}"
    limit = loss_limit(classes)
    message = divergence(test_loss, f"on the {images}", limit, what)
    if message is None:
        return None
    accuracy, major, needed = majority_rate(labels, predicted)
    if accuracy < needed:
        message += (
            f"; their test accuracy, {accuracy:.1%}, is not clearly above the {major:.1%} of "
            f"always answering the test set's largest class ({needed:.1%} or more, two standard "
            "errors above it)"
        )
    elif train_loss is not None:
        loss, count = train_loss()
        on = f"on the first {count} training example{'s' if count != 1 else ''}"
        chance = f"ln {max(classes, 2)} = {limit / DIVERGED_OVER_CHANCE:.4g}"
        if math.isfinite(loss) and loss <= limit / DIVERGED_OVER_CHANCE:
            return (
                f"{message}, but they fit their training data (a loss of {loss:.4g} {on}, under "
                f"{chance}) and score {accuracy:.1%} on the test set against {major:.1%} for "
                "always answering its largest class: overfitting, not divergence; the model "
                "goes on to the quality gate"
            )
        above = f", above {chance}, a uniform guess's" if math.isfinite(loss) else ""
        unfit = "they do not fit their training data"
        message += f"; their training loss was {loss:.6g} {on}{above}: {unfit}"
    raise TrainingDiverged(
        f"training diverged ({f'{diverged}; ' if diverged else ''}{message}); nothing was "
        f"published {ADVICE}"
    )
