"""Training recipes: the learning-rate schedule, loss, weight decay and augmentation
that go with a job spec's ``recipe`` (the batch size and optimizer defaults are filled in by
``fdl.jobspec.RECIPE_DEFAULTS``, so that the stored spec shows them).

``book`` is the book's training: a constant rate, plain cross-entropy, per-example augmentation.
``fast`` adds what modern CIFAR training does: a warm-up then a decaying rate, label smoothing,
decoupled weight decay, vectorised (per-batch) augmentation and, for the CIFAR-10 nets, flip
test-time augmentation in the model; for ``cifar10_airnet`` it is the
airbench-style recipe (Nesterov SGD, triangular rate, label smoothing 0.2, bfloat16 on CPUs
that have it).
All values are documented in docs/training.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import keras

from fdl.architectures import ARCHITECTURES
from fdl.jobspec import JobSpec, RegularizationSpec
from training.divergence import DATA_LOSS
from training.optimizers import make_optimizer

Schedule = Literal["constant", "warmup_cosine", "triangular"]
Augmentation = Literal["none", "book", "book_batched", "flip_translate"]
# Preprocessing families whose training augmentation flips images left to right (CIFAR-10's).
FLIPPED_FAMILIES = ("cifar", "cifar32")


@dataclass(frozen=True)
class Recipe:
    name: str
    schedule: Schedule = "constant"
    warmup_fraction: float = 0.0  # share of all steps spent rising to the peak rate
    start_fraction: float = 1.0  # rate at step 0, as a fraction of the peak (the spec's rate)
    end_fraction: float = 1.0  # rate at the last step, as a fraction of the peak
    label_smoothing: float = 0.0
    weight_decay: float | None = None  # decoupled, scaled by the rate (Keras' weight_decay)
    dropout: float | None = None  # when the spec leaves regularization.dropout unset
    batched_augmentation: bool = False  # whole batches at a time instead of per example
    # bfloat16 compute (float32 weights) on CPUs with native bfloat16 instructions (AVX512-BF16
    # or AMX); float32 elsewhere. Applies only when the worker's mixed_precision is on.
    cpu_bfloat16: bool = False
    # Flip test-time augmentation in the model (``training.tta``) for CIFAR-10 networks, whose
    # training images are flipped at random: evaluation and the served graph average the logits
    # of the image and its mirror.
    flip_tta: bool = False


BOOK = Recipe("book")
FAST = Recipe(
    "fast",
    schedule="warmup_cosine",
    warmup_fraction=0.1,
    start_fraction=0.1,
    end_fraction=0.0,
    label_smoothing=0.1,
    # AdamW-style: Keras decays w by lr * wd each step, so with Adam's small rates wd is large.
    weight_decay=0.05,
    # The book's 0.5 after both dense layers slows learning too much for 15 epochs; 0.1 beat 0.25
    # by 0.75 (cifar10_cnn) and 1.0 points (cifar10_cnn_bn) in 15 epochs (docs/training.md).
    dropout=0.1,
    batched_augmentation=True,
    flip_tta=True,
)
# With BatchNorm and flip TTA the book's CNN underfits 15 epochs even at dropout 0.1: without
# dropout it gained 1.07 points (79.47% against 78.40%; docs/training.md).
FAST_BN = replace(FAST, dropout=0.0)
FAST_AIRNET = Recipe(
    "fast",
    schedule="triangular",
    warmup_fraction=0.25,
    start_fraction=0.1,
    end_fraction=0.0,
    label_smoothing=0.2,
    # Ten times the first value: equal or better at every epoch of a 3-epoch run (docs/training.md).
    weight_decay=5e-3,
    # No weight averaging: Keras averages the trainable weights but not BatchNorm's statistics, and
    # the mismatch cost a 3-epoch run 5-11 points of test accuracy (docs/training.md).
    batched_augmentation=True,
    cpu_bfloat16=True,
    flip_tta=True,  # built into the network (``training.models_airnet``) whatever the recipe
)


def recipe_for(spec: JobSpec) -> Recipe:
    if spec.recipe == "fast":
        return {"cifar10_airnet": FAST_AIRNET, "cifar10_cnn_bn": FAST_BN}.get(spec.model, FAST)
    return BOOK


def flip_tta(spec: JobSpec) -> bool:
    """Whether the job's model averages each image with its mirror at inference: where the
    recipe asks and the architecture's images are flipped in training (not digits)."""
    return recipe_for(spec).flip_tta and ARCHITECTURES[spec.model].family in FLIPPED_FAMILIES


def augmentation(spec: JobSpec, family: str) -> Augmentation:
    """Which ``training.pipeline`` augmentation a job trains with."""
    if not spec.augment:
        return "none"
    if family == "cifar32":
        return "flip_translate"
    return "book_batched" if recipe_for(spec).batched_augmentation else "book"


class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from ``start`` to ``peak`` over ``warmup_steps``, then linear to ``end`` at
    ``total_steps`` (a triangle, or one cycle), constant after."""

    def __init__(
        self, start: float, peak: float, end: float, warmup_steps: int, total_steps: int
    ) -> None:
        self.start, self.peak, self.end = start, peak, end
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, warmup_steps + 1)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        rising = self.start + (self.peak - self.start) * step / warm
        falling = self.peak + (self.end - self.peak) * keras.ops.minimum(
            (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps), 1.0
        )
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict:
        return {
            "start": self.start,
            "peak": self.peak,
            "end": self.end,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


def learning_rate(recipe: Recipe, peak: float, total_steps: int):
    """The rate (a float, or a schedule over optimizer steps) with ``peak`` the spec's rate."""
    warmup = round(recipe.warmup_fraction * total_steps)
    start, end = recipe.start_fraction * peak, recipe.end_fraction * peak
    match recipe.schedule:
        case "constant":
            return peak
        case "warmup_cosine":
            return keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=start,
                decay_steps=max(total_steps - warmup, 1),
                alpha=recipe.end_fraction,
                warmup_target=peak,
                warmup_steps=warmup,
            )
        case "triangular":
            return PiecewiseLinear(start, peak, end, warmup, total_steps)
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy on logits against integer labels with label smoothing (Keras' sparse loss
    has no smoothing): the target is ``1 - s + s/K`` for the label and ``s/K`` elsewhere."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy") -> None:
        super().__init__(name=name)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")
        onehot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            onehot, y_pred, from_logits=True, label_smoothing=self.smoothing
        )

    def get_config(self) -> dict:
        return {"smoothing": self.smoothing, "name": self.name}


def make_loss(recipe: Recipe) -> keras.losses.Loss:
    if recipe.label_smoothing:
        return SmoothedSparseCrossentropy(recipe.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_for_recipe(
    model: keras.Model, spec: JobSpec, total_steps: int, steps_per_execution: int = 1
) -> Recipe:
    """Compiles ``model`` with the spec's optimizer under its recipe; returns the recipe."""
    recipe = recipe_for(spec)
    rate = learning_rate(recipe, spec.optimizer.learning_rate, total_steps)
    metrics: list[Any] = ["accuracy"]
    if spec.regularization.l1 or spec.regularization.l2:
        # Keras adds the penalty to the reported loss: TensorBoard also shows the fit without
        # it (training.divergence.DATA_LOSS; the divergence check judges the test loss).
        metrics.append(
            keras.metrics.SparseCategoricalCrossentropy(name=DATA_LOSS, from_logits=True)
        )
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=make_optimizer(spec.optimizer, rate, recipe.weight_decay),
        loss=make_loss(recipe),
        metrics=metrics,
    )
    return recipe


def regularization_for(spec: JobSpec) -> RegularizationSpec:
    """The spec's regularization with dropout resolved: the spec's, else the recipe's, else the
    architecture's own default (``None`` is passed on to ``build_model``)."""
    recipe = recipe_for(spec)
    if spec.regularization.dropout is not None or recipe.dropout is None:
        return spec.regularization
    return spec.regularization.model_copy(update={"dropout": recipe.dropout})
