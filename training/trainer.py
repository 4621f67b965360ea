"""Train one job's network with Keras ``fit`` on ``tf.data`` pipelines and evaluate it."""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fdl.architectures import ARCHITECTURES
from fdl.jobs import JobStore, NotThisRun
from fdl.jobspec import VALIDATION_ONE_IN, JobSpec
from training import gradient_registry
from training.callbacks import BestEffortTensorBoard, JobCallback
from training.checkpoints import JobCheckpoints, fingerprint
from training.data import DataMissingError, ImageData
from training.divergence import (
    ADVICE,
    TrainingDiverged,
    cross_entropy,
    judge_run,
    judge_test_loss,
    loss_limit,
    restored_epoch,
    sample_loss,
)
from training.models import build_job_model, prepare_model
from training.pipeline import eval_dataset, split_validation, train_dataset
from training.preprocess import network_input_shape
from training.recipes import augmentation, compile_for_recipe, recipe_for
from training.settings import DEFAULT_STEPS_PER_EXECUTION
from training.time_limit import Deadline, TimedOut
from training.worker_stop import HandBack

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    model: keras.Model
    cancelled: bool
    history: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)  # test_loss may be None
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    counts: dict[str, int] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)


CPUINFO = Path("/proc/cpuinfo")


def cpu_has_native_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), from the kernel's
    flags; False where the flags cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_policy(
    gpus: int, mixed_precision: bool, cpu_bfloat16: bool, cpuinfo: Path = CPUINFO
) -> str:
    """float16 compute on GPUs; bfloat16 on CPUs that have it natively, when the recipe asks."""
    if not mixed_precision:
        return "float32"
    if gpus:
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_bfloat16 and cpu_has_native_bfloat16(cpuinfo) else "float32"


@contextmanager
def runtime(
    seed: int, mixed_precision: bool, cpu_bfloat16: bool = False
) -> Iterator[dict[str, Any]]:
    """Seeds, determinism (CPU), distribution strategy (>1 GPU) and precision policy of a run."""
    gpus = tf.config.list_physical_devices("GPU")
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if not gpus:
        tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    policy = precision_policy(len(gpus), mixed_precision, cpu_bfloat16)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        with gradient_registry.forgotten_at_end():
            yield {
                "strategy": type(strategy).__name__,
                "replicas": strategy.num_replicas_in_sync,
                "gpus": len(gpus),
                "precision_policy": policy,
                "_strategy": strategy,
            }
    finally:
        keras.mixed_precision.set_global_policy(previous)


def no_validation(examples: int) -> str:
    """Why a job that asked for early stopping fails before training when its dataset (the
    spec's checks cannot know its size) leaves no validation examples: it would train without
    the stopping and best-weights restore it asked for."""
    return (
        f"early_stopping needs validation examples, and none are left: validation_split holds "
        f"out at most one in {VALIDATION_ONE_IN} of the {examples} training examples; give the "
        f"dataset at least {VALIDATION_ONE_IN} training images, or drop early_stopping"
    )


def compile_model(
    model: keras.Model, spec: JobSpec, steps_per_execution: int = 1, total_steps: int = 1
) -> None:
    """Compiles with the spec's optimizer and loss under its recipe (``training.recipes``);
    ``total_steps`` (batches over all epochs) shapes the recipe's learning-rate schedule."""
    compile_for_recipe(model, spec, total_steps, steps_per_execution)


def train(
    spec: JobSpec,
    data: ImageData,
    store: JobStore,
    job_id: str,
    tensorboard_dir: Path | None,
    mixed_precision: bool = True,
    steps_per_execution: int = DEFAULT_STEPS_PER_EXECUTION,
    deadline: Deadline | None = None,
    run: str | None = None,
    lost: threading.Event | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainOutcome:
    """Train and evaluate; raises :class:`TimedOut` when training passed ``deadline``, and
    :class:`NotThisRun` when the job is no longer the run's named ``run`` (a progress report that
    its record refused, or ``lost`` set by the run's heartbeat thread): it stops at the next
    batch. With ``checkpoint_dir``, a checkpoint after each epoch, and the job's newest one
    resumed from (:mod:`training.checkpoints`)."""
    arch = ARCHITECTURES[spec.model]
    net_shape = network_input_shape(arch.image_shape, arch.family)
    (x_train, y_train), validation = split_validation(
        data.x_train, data.y_train, spec.validation_split
    )
    if spec.early_stopping is not None and validation is None:
        raise DataMissingError(no_validation(len(data.x_train)))
    with runtime(spec.seed, mixed_precision, recipe_for(spec).cpu_bfloat16) as info:
        strategy = info.pop("_strategy")
        batch = spec.batch_size * strategy.num_replicas_in_sync
        augment = augmentation(spec, arch.family)
        train_ds = train_dataset(x_train, y_train, arch.family, batch, spec.seed, augment)
        val_ds = eval_dataset(*validation, arch.family, batch) if validation else None
        steps = math.ceil(len(x_train) / batch)
        with strategy.scope():
            model = build_job_model(spec, net_shape, len(data.class_names))
            prepare_model(spec.model, model, x_train)
            compile_model(model, spec, steps_per_execution, steps * spec.epochs)
        info |= {"recipe": spec.recipe, "augmentation": augment}
        progress = JobCallback(store, job_id, spec.epochs, len(x_train), steps, deadline, run, lost)
        callbacks: list[keras.callbacks.Callback] = [progress]
        if tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
            log.warning(
                "the tensorboard package is missing; job %s writes no TensorBoard logs", job_id
            )
        elif tensorboard_dir is not None:
            callbacks.append(  # a full disk turns it off, with a note; training goes on
                BestEffortTensorBoard(
                    str(tensorboard_dir), progress.note, histogram_freq=1, write_graph=False
                )
            )
        stopper = None
        if spec.early_stopping is not None and val_ds is not None:
            stopper = keras.callbacks.EarlyStopping(
                monitor=spec.early_stopping.monitor,
                patience=spec.early_stopping.patience,
                restore_best_weights=True,
            )
            callbacks.append(stopper)
        checkpoints = None
        if checkpoint_dir is not None:  # last: it restores the state of those before it
            job = fingerprint(
                spec.model_dump(mode="json"), len(x_train), len(data.class_names), steps
            )
            checkpoints = JobCheckpoints(
                checkpoint_dir, job_id, progress, stopper, job, info["precision_policy"]
            )
            callbacks.append(checkpoints)
        started = time.monotonic()
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=spec.epochs,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
        # the job's: a resumed run's counts its checkpoint's seconds (its earlier runs')
        info["train_seconds"] = round(progress.earlier_s + time.monotonic() - started, 3)
        info["optimizer_steps"] = int(model.optimizer.iterations)
        if checkpoints is not None and checkpoints.resumed:
            info["resumed_after_epoch"] = checkpoints.resumed
        if progress.lost.is_set():
            raise NotThisRun(f"job {job_id} is no longer this run's; training stopped")
        if deadline is not None and progress.timed_out:
            raise TimedOut(deadline.error(progress.timed_out))
        if progress.handed_back:  # its worker is stopping (training/worker_stop.py)
            raise HandBack(progress.handed_back)
        if not progress.cancelled:  # a cancelled run ends cancelled, whatever its loss
            stopped = judge_run(model, stopper, progress.history, progress.diverged)
            if stopped is not None:
                info["stopped_early"] = stopped
        restored = restored_epoch(stopper)  # the weights tested and published are that epoch's
        if restored is not None:
            info["restored_epoch"] = restored + 1
        info["epochs_run"] = len(progress.history)
        # the most that metrics.test_loss, the weights kept's, may be, unless runtime.overfit
        # says that they learned and fit their training data (judge_test_loss)
        info["loss_limit"] = round(loss_limit(len(data.class_names)), 6)
        counts = {
            "train": len(x_train),
            "validation": 0 if validation is None else len(validation[0]),
            "test": len(data.x_test),
        }
        outcome = TrainOutcome(model, progress.cancelled, progress.history, counts=counts)
        outcome.runtime = info
        if progress.cancelled:
            return outcome
        logits = model.predict(
            eval_dataset(data.x_test, data.y_test, arch.family, batch), verbose=0
        )
        # the training data's loss, measured only when the test loss is over the limit and
        # the test accuracy clearly above the largest class's share
        fits = partial(sample_loss, model, x_train, y_train, arch.family, batch)
        logits = np.asarray(logits, np.float32)
        classes = len(data.class_names)
        outcome = _evaluate(
            outcome, logits, data.y_test, progress.diverged, restored, classes, fits
        )
    if "overfit" in outcome.runtime:
        progress.note(outcome.runtime["overfit"])
    return outcome


def _evaluate(
    outcome: TrainOutcome,
    logits: np.ndarray,
    y_true: np.ndarray,
    diverged: str | None = None,
    epoch: int | None = None,
    classes: int | None = None,
    train_loss: Callable[[], tuple[float, int]] | None = None,
) -> TrainOutcome:
    """Test metrics from ``logits``, and the training metrics of the epoch (from 0) whose
    weights were kept: ``epoch``, restored by early stopping, else the last. With ``classes``,
    raises :class:`TrainingDiverged` when the test loss says the weights are no model, unless
    the test accuracy and then the training loss that ``train_loss`` measures say that they
    overfit: ``runtime.overfit`` says so (:func:`training.divergence.judge_test_loss`)."""
    broken = int((~np.isfinite(logits)).any(axis=1).sum())
    if broken:
        raise TrainingDiverged(
            f"training diverged{f' ({diverged})' if diverged else ''}: the trained model's "
            f"outputs are NaN or infinite for {broken} of {len(logits)} test images; nothing was "
            f"published {ADVICE}"
        )
    loss = cross_entropy(y_true, logits)
    y_pred = logits.argmax(axis=1)
    if classes is not None:
        overfit = judge_test_loss(loss, classes, y_true, y_pred, diverged, epoch, train_loss)
        if overfit is not None:
            outcome.runtime["overfit"] = overfit
    outcome.y_true, outcome.y_pred = y_true, y_pred
    outcome.metrics = {
        "test_accuracy": round(float((y_pred == y_true).mean()), 6),
        # None (JSON null) when it overflowed: finite logits can still be too far apart
        "test_loss": round(float(loss), 6) if math.isfinite(float(loss)) else None,
    }
    if outcome.history:
        kept = epoch if epoch is not None and epoch < len(outcome.history) else -1
        last = outcome.history[kept]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if last.get(key) is not None:
                outcome.metrics[f"train_{key}" if not key.startswith("val") else key] = last[key]
    return outcome
