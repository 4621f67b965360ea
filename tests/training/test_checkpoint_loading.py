"""How a run takes its job's checkpoint (training/checkpoints.py), in this process on real Redis
and TensorFlow: a checkpoint that cannot be used is noted and removed and the job starts over
from the model as built; one of another minor Keras is resumed; early stopping's state survives
a resume; a job checkpointed after its last epoch is evaluated without training."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.jobs import JobStore, new_job_id
from tests.training.checkpoint_jobs import (
    SMALL,
    checkpoint_of_a_run,
    checkpoint_store,
    epochs_reported,
    events,
    notes,
    set_state,
    tiny_fit,
)
from training import checkpoint_files


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from checkpoint_store(redis_url)


def _damage_optimizer(weights: Path) -> None:
    """One optimizer variable fewer, as a GPU worker's mixed-float16 optimizer (a loss-scale
    optimizer around it) has more: Keras only warns, skips the optimizer and keeps the layers it
    loaded (its step count 0: a learning-rate schedule would start again)."""
    import h5py

    with h5py.File(weights, "r+") as stored:
        optimizer = stored["optimizer"]["vars"]
        del optimizer[str(len(optimizer) - 1)]


def test_an_unusable_checkpoint_is_noted_and_the_job_starts_over(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Jobs whose checkpoint (after their one epoch) cannot be loaded: a truncated weights file;
    an optimizer whose variables differ. Each run says so in the job's events, starts from
    epoch 1 with the model as built (its first epoch's loss is that of a run that never had a
    checkpoint: nothing was left half-loaded) and succeeds; its checkpoints are removed at its
    end. A usable checkpoint would have had them train no epoch (they had done them all)."""
    root = tmp_path / "var" / "checkpoints"
    written, first_loss = checkpoint_of_a_run(store, data_dir, root)
    for damage in ("truncated", "other optimizer", "other major Keras"):
        job_id = new_job_id()
        weights = root / job_id / written.name / "weights.weights.h5"
        shutil.copytree(written, weights.parent)
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        elif damage == "other optimizer":
            _damage_optimizer(weights)
        else:
            set_state(weights.parent, keras_version="2.15.0")
        result, record, _models = job_in_process(store, job_id, data_dir, **SMALL)
        assert record["status"] == "succeeded", (damage, record)
        assert result is not None and "resumed_after_epoch" not in result, (damage, result)
        said = notes(store, job_id)
        cannot = [n for n in said if n.startswith("its checkpoint after epoch 1 cannot be used")]
        assert len(cannot) == 1, (damage, said)
        assert cannot[0].endswith("training starts from its first epoch"), cannot
        reports = [e["data"] for e in events(store, job_id) if e["type"] == "progress"]
        assert [r["epoch"] for r in reports if "step" not in r] == [1], (damage, reports)
        assert reports[-1]["loss"] == first_loss, (damage, reports[-1], first_loss)
        assert not (root / job_id).exists(), damage


def test_a_checkpoint_of_another_minor_keras_is_resumed(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """A rollout that upgrades the worker image's Keras within its major version (the very case
    of a hand-back) resumes the jobs it took back: the load checks each variable itself."""
    import keras

    root = tmp_path / "var" / "checkpoints"
    written, _ = checkpoint_of_a_run(store, data_dir, root)
    job_id = new_job_id()
    shutil.copytree(written, root / job_id / written.name)
    major = keras.__version__.split(".")[0]
    set_state(root / job_id / written.name, keras_version=f"{major}.0.0")
    result, record, _models = job_in_process(store, job_id, data_dir, **SMALL)
    assert record["status"] == "succeeded", record
    assert result is not None and result.get("resumed_after_epoch") == [1], result


TIMES = ("images_per_second", "eta_seconds")


def test_early_stopping_survives_a_resume(store: JobStore, tmp_path: Path) -> None:
    """``fit`` with the job's callbacks (progress, early stopping, checkpoints), interrupted
    after an epoch past early stopping's best and before its stop, then a fresh model resumed:
    the same best epoch, stop, history and weights (best weights restored) as a run never
    interrupted, and the optimizer's steps of its epochs. Without the early-stopping state in the
    checkpoint, the resumed run took its first epoch for the best and stopped later."""
    import keras
    import numpy as np
    import tensorflow as tf

    from training.callbacks import JobCallback
    from training.checkpoints import JobCheckpoints

    epochs, batch = 30, 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=64) > 0).astype("int32")
    x_val = rng.normal(size=(32, 8)).astype("float32")
    y_val = (x_val[:, 0] + rng.normal(size=32) > 0).astype("int32")

    class Interrupted(Exception):
        pass

    class Interrupt(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self, after: int) -> None:
            super().__init__()
            self.after = after

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch + 1 == self.after:
                raise Interrupted

    def fit(job_id: str, interrupt_after: int | None = None) -> tuple[Any, ...]:
        keras.utils.set_random_seed(1)
        tf.config.experimental.enable_op_determinism()
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)]
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.Adam(0.03), loss, metrics=["accuracy"])
        progress = JobCallback(store, job_id, epochs, len(x), len(x) // batch)
        stopper = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
        checkpoints = JobCheckpoints(tmp_path, job_id, progress, stopper, "spec", "float32")
        callbacks = [progress, stopper, checkpoints]
        if interrupt_after is not None:
            callbacks.append(Interrupt(interrupt_after))
        with contextlib.suppress(Interrupted):
            model.fit(x, y, batch, epochs, 0, callbacks, validation_data=(x_val, y_val))
        return model, progress, stopper, checkpoints

    whole, interrupted = new_job_id(), new_job_id()
    for job_id in (whole, interrupted):
        store.create({"model": "mnist_logreg"}, job_id)
    model, progress, stopper, _ = fit(whole)
    best, stopped = stopper.best_epoch, stopper.stopped_epoch
    assert best > 0 and best + 3 == stopped < epochs - 1, (best, stopped)
    fit(interrupted, best + 2)  # after the best epoch, waiting for a better one
    assert checkpoint_files.last_epoch(tmp_path, interrupted) == best + 2
    model2, progress2, stopper2, checkpoints2 = fit(interrupted)
    assert checkpoints2.resumed == [best + 2]
    assert (stopper2.best_epoch, stopper2.stopped_epoch) == (best, stopped)
    timeless = [{k: v for k, v in e.items() if k not in TIMES} for e in progress.history]
    assert [{k: v for k, v in e.items() if k not in TIMES} for e in progress2.history] == timeless
    assert int(model2.optimizer.iterations) == int(model.optimizer.iterations)
    assert int(model.optimizer.iterations) == (stopped + 1) * (len(x) // batch)
    for kept, resumed in zip(model.get_weights(), model2.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, resumed)


def test_an_unusable_checkpoint_never_shadows_the_next_runs_ones(
    store: JobStore, tmp_path: Path
) -> None:
    """A job whose checkpoint after epoch 2 cannot be used (damaged): the run that starts over
    writes its own after epochs 1 and 2, and is interrupted; the next run resumes after epoch 2
    from the good one. Before, the damaged one was kept: it shadowed the run's checkpoints of
    epochs below it and, at its own epoch, was as likely taken as the new one (names sort on
    their random part), so the job started over again."""
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    damaged = tmp_path / job_id / "epoch-0002-ffffffffffff"
    damaged.mkdir(parents=True)
    (damaged / "state.json").write_text("{")
    assert tiny_fit(store, job_id, tmp_path, interrupt_after=2)[1].resumed == []
    assert tiny_fit(store, job_id, tmp_path)[1].resumed == [2]
    assert not damaged.exists()


def test_a_job_killed_after_its_last_epochs_checkpoint_is_evaluated_without_training(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """A job whose checkpoint is after its last epoch (its run killed before the evaluation or
    the publish): the next run trains no epoch, evaluates the checkpoint's weights and
    succeeds, its history the checkpoint's."""
    root = tmp_path / "var" / "checkpoints"
    written, first_loss = checkpoint_of_a_run(store, data_dir, root)
    job_id = new_job_id()
    shutil.copytree(written, root / job_id / written.name)
    result, record, _models = job_in_process(store, job_id, data_dir, **SMALL)
    assert record["status"] == "succeeded", record
    assert result is not None and result["resumed_after_epoch"] == [1], result
    assert result["epochs_run"] == 1 and result["metrics"]["train_loss"] == first_loss, result
    assert epochs_reported(store, job_id) == []
    assert not (root / job_id).exists()
