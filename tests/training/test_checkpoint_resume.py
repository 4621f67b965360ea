"""A job's run handed back (its worker stopping) or lost (its pool process SIGKILLed) resumes
from the job's last checkpoint instead of starting over (training/checkpoints.py): real workers,
Redis and TensorFlow on tiny data. Also: a checkpoint that cannot be used is noted and the job
starts over; early stopping's state survives a resume; a write killed midway is never taken as
a checkpoint; a reaper removes the checkpoints of ended jobs, never those of live ones."""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import enqueue_training
from harness.procs import wait_for
from harness.worker import Worker, start_worker
from tests.training.stores import store_on_db
from training import checkpoint_files
from training.settings import WorkerSettings

DB = 11  # the reaper's test: a database of its own, emptied first
EPOCHS = 4
BATCH = 32
HELD_OUT = 200
# An epoch of most of a second on 2 cores: a stop or kill sent as epoch 2's checkpoint appears
# lands in epoch 3.
SPEC: dict[str, Any] = {
    "model": "mnist_mlp",
    "epochs": EPOCHS,
    "batch_size": BATCH,
    "max_train_examples": 2200,
    "max_test_examples": 200,
    "validation_split": HELD_OUT,
}
STEPS = math.ceil((SPEC["max_train_examples"] - HELD_OUT) / BATCH)
SETTINGS = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "900",
    "FDL_STEPS_PER_EXECUTION": "8",
}


def _env(name: str, **more: str) -> dict[str, str]:
    return {**SETTINGS, "FDL_TRAINING_QUEUE": f"fdl-tests-resume-{name}-{os.getpid()}", **more}


def _events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    return [event for _, event in store.read_events(job_id, count=10_000)]


def _epochs_reported(store: JobStore, job_id: str) -> list[int]:
    """The epochs of the job's end-of-epoch reports (mid-epoch ones have a ``step``)."""
    events = _events(store, job_id)
    return [
        e["data"]["epoch"] for e in events if e["type"] == "progress" and "step" not in e["data"]
    ]


def _checkpoint_after(worker: Worker, job_id: str, epoch: int) -> Path | None:
    found = checkpoint_files.newest(worker.var_dir / "checkpoints", job_id)
    return found[1] if found and found[0] >= epoch else None


def _metadata(worker: Worker, result: dict[str, Any]) -> dict[str, Any]:
    path = worker.model_dir / result["model"] / str(result["version"]) / "assets.extra"
    return json.loads((path / "metadata.json").read_text())


def _resumed_whole(worker: Worker, job_id: str, done: dict[str, Any], run: str) -> None:
    """The job ended ``succeeded`` after a run that resumed after epoch 2 from ``run``'s
    checkpoint: each epoch reported once, the optimizer's steps those of 4 epochs, and its
    checkpoints removed."""
    assert done["status"] == "succeeded", (done, worker.process.log_tail())
    assert _epochs_reported(worker.store, job_id) == [1, 2, 3, 4]
    notes = [e["data"]["message"] for e in _events(worker.store, job_id) if e["type"] == "log"]
    assert f"resumed after epoch 2 from the checkpoint written by {run}" in notes, notes
    assert done["result"]["resumed_after_epoch"] == [2], done["result"]
    metadata = _metadata(worker, done["result"])
    assert metadata["runtime"]["resumed_after_epoch"] == [2], metadata["runtime"]
    assert metadata["runtime"]["optimizer_steps"] == STEPS * EPOCHS, metadata["runtime"]
    assert [entry["epoch"] for entry in metadata["history"]] == [1, 2, 3, 4]
    assert not (worker.var_dir / "checkpoints" / job_id).exists()


def test_a_job_handed_back_after_epoch_2_resumes_from_epoch_3(
    training_worker: Worker, redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """SIGTERM to a worker's main process as its job's epoch 2 is reported: the run hands the
    job back in epoch 3, saying that it resumes after epoch 2, and the session's worker, which
    shares its FDL_CHECKPOINT_DIR (the job's queue is the session worker's; only its first
    message went to the stopping one), trains epochs 3 and 4 only. Before, it started over from
    epoch 1 (epochs 1 and 2 reported twice, the optimizer's steps those of 6 epochs)."""
    checkpoints = str(training_worker.var_dir / "checkpoints")
    env = _env("stop", FDL_CHECKPOINT_DIR=checkpoints)
    first = start_worker("resume-stop", redis_url, data_dir, tmp_path, logs_dir, env)
    try:
        body = JobSpec.model_validate({**SPEC, "publish_as": "resume-stop"}).model_dump(mode="json")
        job_id = new_job_id()
        training_worker.store.create(body, job_id, training_worker.queue)
        enqueue_training(first.app, job_id, first.queue, None)
        wait_for(
            lambda: 2 in _epochs_reported(first.store, job_id),
            120,
            "epoch 2 reported",
            interval=0.02,
            check=first.process.ensure_alive,
        )
        os.kill(first.process.pid, signal.SIGTERM)
        assert first.process.popen.wait(15) == 0, first.process.log_tail()
    finally:
        first.process.stop()
    handed = [e["data"] for e in _events(first.store, job_id) if e["data"].get("handed_back")]
    assert len(handed) == 1, handed
    reason = handed[0]["reason"]
    assert "in epoch 3 of 4; it resumes after epoch 2, its last checkpoint, and this run" in reason
    run = reason.split("handed back by worker ", 1)[1].split(",", 1)[0]
    done = training_worker.wait_done(job_id, timeout=120)
    _resumed_whole(training_worker, job_id, done, run)
    assert (done["attempts"], done["handed_back"]) == (1, 1), done


def test_a_lost_run_resumes_from_its_last_checkpoint(training_worker: Worker) -> None:
    """The pool process of the session's worker SIGKILLed (as the out-of-memory killer does)
    once its job's checkpoint after epoch 2 is in: the worker settles the lost run as a reaper
    does (training/lost_process.py), and the next run, in a fresh pool process, resumes after
    epoch 2. Before, it started over."""
    worker = training_worker
    job_id = worker.submit(publish_as="resume-lost", **SPEC)
    wait_for(
        lambda: _checkpoint_after(worker, job_id, 2),
        120,
        "epoch 2's checkpoint",
        interval=0.02,
        check=worker.process.ensure_alive,
    )
    run = str((worker.store.get(job_id) or {})["worker"])
    pid = int(run.rsplit(":", 1)[1])
    assert f"PPid:\t{worker.process.pid}\n" in Path(f"/proc/{pid}/status").read_text()
    os.kill(pid, signal.SIGKILL)
    done = worker.wait_done(job_id, timeout=120)
    _resumed_whole(worker, job_id, done, run)
    assert done["attempts"] == 2, done
    statuses = [e["data"]["status"] for e in _events(worker.store, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"], statuses


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def _complete(root: Path, job_id: str, epoch: int) -> Path:
    """A checkpoint folder of ``job_id`` as a finished write leaves it (its contents are not
    read here)."""
    return checkpoint_files.write(
        root, job_id, epoch, lambda f: (f / "state.json").write_text("{}")
    )


def _age(folder: Path, seconds: float) -> None:
    for path in (*folder.iterdir(), folder):
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def _reaper_settings(tmp_path: Path, checkpoints: Path, name: str) -> WorkerSettings:
    """A worker's settings for a reaper pass over ``checkpoints``, on a queue of the test's."""
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        checkpoint_dir=checkpoints,
        training_queue=f"fdl-tests-resume-{name}-{os.getpid()}",
    )


def test_the_reaper_removes_the_checkpoints_of_ended_jobs_only(
    store: JobStore, tmp_path: Path
) -> None:
    """One reaper pass: the checkpoints of a job cancelled while queued, of one that ended and of
    one whose record is gone are removed; a queued and a running job keep theirs, and lose only
    a temporary folder older than STALE_TEMP_S (a write that died), not a fresh one. Before, no
    checkpoint was ever removed but by its own run's end."""
    from training.reaper import reap_once

    root = tmp_path / "checkpoints"
    settings = _reaper_settings(tmp_path, root, "reaper")
    ids = {name: new_job_id() for name in ("queued", "running", "cancelled", "ended", "gone")}
    for name, job_id in ids.items():
        if name != "gone":
            store.create({"model": "mnist_logreg"}, job_id, settings.training_queue)
        if name in ("running", "ended"):
            assert store.mark_running(job_id, "celery@resume:1")
        _complete(root, job_id, 2)
    assert store.request_cancel(ids["cancelled"]) is not None
    assert store.finish(ids["ended"], JobStatus.FAILED, error="ended by the test")
    old, fresh = (
        root / ids["queued"] / ".tmp-epoch-0003-aaaaaaaaaaaa",
        root / ids["running"] / ".tmp-epoch-0003-bbbbbbbbbbbb",
    )
    for temp in (old, fresh):
        temp.mkdir()
        (temp / "state.json").write_text("{}")
    _age(old, checkpoint_files.STALE_TEMP_S + 60)
    reap_once(store, settings, lambda *_: None, sweep_leftovers=False)
    left = sorted(path.name for path in root.iterdir() if path.is_dir())  # not .clock
    assert left == sorted([ids["queued"], ids["running"]]), left
    assert checkpoint_files.last_epoch(root, ids["queued"]) == 2 and not old.exists()
    assert checkpoint_files.last_epoch(root, ids["running"]) == 2 and fresh.exists()


# A writer of a checkpoint after epoch 3 that stops once its files are in, before the rename: a
# process of its own (a fork of this one, whose threads may hold locks, can hang).
WRITER = """
import sys
from pathlib import Path
from training.checkpoint_files import write

def fill(folder):
    (folder / "state.json").write_text('{"epoch": 3}')
    (folder / "weights.weights.h5").write_bytes(bytes(4096))
    print("written", flush=True)
    sys.stdin.read()  # killed here

write(Path(sys.argv[1]), sys.argv[2], 3, fill)
"""


def _killed_mid_write(root: Path, job_id: str) -> None:
    """SIGKILL a writer of a checkpoint of ``job_id`` once every file of it is in."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), job_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        assert select.select([child.stdout], [], [], 60)[0], "the write never started"
        assert child.stdout.readline() == b"written\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def test_a_write_killed_midway_is_never_taken_and_is_removed(
    store: JobStore, tmp_path: Path
) -> None:
    """A writer SIGKILLed with every file of its checkpoint after epoch 3 written, before the
    rename: the job's newest checkpoint is still epoch 2's (what a run resumes from, what a
    hand-back names); the half folder is removed by a reaper once stale, and at once by the next
    run of the job (training/checkpoints.py: its run owns the job)."""
    root = tmp_path / "checkpoints"
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, "celery@resume:2")
    _complete(root, job_id, 2)
    _killed_mid_write(root, job_id)
    temps = [p for p in (root / job_id).iterdir() if p.name.startswith(".tmp-")]
    assert len(temps) == 1 and (temps[0] / "state.json").exists(), temps
    assert checkpoint_files.last_epoch(root, job_id) == 2
    assert checkpoint_files.sweep(store, root) == [] and temps[0].exists()  # fresh: kept
    _age(temps[0], checkpoint_files.STALE_TEMP_S + 60)
    assert checkpoint_files.sweep(store, root) == [] and not temps[0].exists()
    assert checkpoint_files.last_epoch(root, job_id) == 2
    _killed_mid_write(root, job_id)
    assert checkpoint_files.remove_temps(root / job_id) != []  # as a run starting removes them
    assert [p.name[:11] for p in (root / job_id).iterdir()] == ["epoch-0002-"]
    shutil.rmtree(root)


# The job of the in-process tests: job_in_process's spec (1 epoch) with these fields; the quality
# gate says no (nothing exported: not what is tested, and it takes seconds).
SMALL = {"model": "mnist_logreg", "max_train_examples": 256, "publish": {"min_accuracy": 1.0}}


def _checkpoint_of_a_run(store: JobStore, data_dir: Path, root: Path) -> tuple[Path, float]:
    """A checkpoint after the one epoch of a run of SMALL (``train`` alone, whose checkpoints
    stay), and that epoch's loss."""
    from fdl.architectures import ARCHITECTURES
    from training.data.registry import load_dataset
    from training.trainer import train

    spec = JobSpec(epochs=1, batch_size=32, max_test_examples=64, validation_split=32, **SMALL)
    shape = ARCHITECTURES[spec.model].image_shape
    data = load_dataset("mnist", shape, data_dir, root, False)
    data = data.capped(spec.max_train_examples, spec.max_test_examples)
    job_id = new_job_id()
    store.create(spec.model_dump(mode="json"), job_id)
    outcome = train(spec, data, store, job_id, None, checkpoint_dir=root)
    found = checkpoint_files.newest(root, job_id)
    assert found is not None and found[0] == 1, found
    return found[1], outcome.history[0]["loss"]


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
    written, first_loss = _checkpoint_of_a_run(store, data_dir, root)
    for damage in ("truncated", "other optimizer", "other major Keras"):
        job_id = new_job_id()
        weights = root / job_id / written.name / "weights.weights.h5"
        shutil.copytree(written, weights.parent)
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[:1000])
        elif damage == "other optimizer":
            _damage_optimizer(weights)
        else:
            _set_keras_version(weights.parent, "2.15.0")
        result, record, _models = job_in_process(store, job_id, data_dir, **SMALL)
        assert record["status"] == "succeeded", (damage, record)
        assert result is not None and "resumed_after_epoch" not in result, (damage, result)
        notes = [e["data"]["message"] for e in _events(store, job_id) if e["type"] == "log"]
        cannot = [n for n in notes if n.startswith("its checkpoint after epoch 1 cannot be used")]
        assert len(cannot) == 1, (damage, notes)
        assert cannot[0].endswith("training starts from its first epoch"), cannot
        reports = [e["data"] for e in _events(store, job_id) if e["type"] == "progress"]
        assert [r["epoch"] for r in reports if "step" not in r] == [1], (damage, reports)
        assert reports[-1]["loss"] == first_loss, (damage, reports[-1], first_loss)
        assert not (root / job_id).exists(), damage


def _set_keras_version(checkpoint: Path, version: str) -> None:
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps(state | {"keras_version": version}))


def test_a_checkpoint_of_another_minor_keras_is_resumed(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """A rollout that upgrades the worker image's Keras within its major version (the very case
    of a hand-back) resumes the jobs it took back: the load checks each variable itself."""
    import keras

    root = tmp_path / "var" / "checkpoints"
    written, _ = _checkpoint_of_a_run(store, data_dir, root)
    job_id = new_job_id()
    shutil.copytree(written, root / job_id / written.name)
    major = keras.__version__.split(".")[0]
    _set_keras_version(root / job_id / written.name, f"{major}.0.0")
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


def test_a_checkpoint_dir_that_cannot_be_used_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    """FDL_CHECKPOINT_DIR is prepared at start as FDL_VAR_DIR is: a file in its place stops the
    worker in one line (exit 1) instead of every job's checkpoints failing one by one."""
    from tests.training.test_worker_settings import run_worker

    taken = tmp_path / "checkpoints"
    taken.write_text("")
    result = run_worker(tmp_path, FDL_CHECKPOINT_DIR=str(taken))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"fdl-worker: FDL_CHECKPOINT_DIR: {taken} exists and is not a folder\n"


def test_a_checkpoint_that_cannot_be_written_is_noted_once_and_training_goes_on(
    store: JobStore, tmp_path: Path
) -> None:
    """A checkpoint folder that cannot be made (a file in its place, as a full or read-only disk
    refuses it): the first write's failure turns checkpoints off for the run with one note in the
    job's events, and ``fit`` trains its epochs. Without the guard the first epoch's end raised
    and the job failed."""
    import keras
    import numpy as np

    from training.callbacks import JobCallback
    from training.checkpoints import JobCheckpoints

    blocked = tmp_path / "checkpoints"
    blocked.write_text("")
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    progress = JobCallback(store, job_id, 3, 8, 1)
    checkpoints = JobCheckpoints(blocked, job_id, progress, None, "spec", "float32")
    x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
    model.fit(x, y, 8, 3, 0, [progress, checkpoints])
    assert [entry["epoch"] for entry in progress.history] == [1, 2, 3]
    notes = [e["data"]["message"] for e in _events(store, job_id) if e["type"] == "log"]
    assert len(notes) == 1 and notes[0].startswith("checkpoints are off for the rest of this run: ")
    assert checkpoints.failed is not None and blocked.is_file()


def test_a_checkpoint_dir_shared_with_other_folders_loses_none_of_them(
    store: JobStore, tmp_path: Path
) -> None:
    """FDL_CHECKPOINT_DIR set to a folder that holds others' folders (the worker refuses its own
    var folder, data or model repository there, tests/training/test_worker_settings.py, but not
    another program's: another deployment's models, a cache), named as a job id may be and with
    no record. A reaper pass and a run's end remove only checkpoints. Before, the reaper's pass
    removed such folders whole."""
    from training.reaper import reap_once
    from training.run_end import end_run

    var = tmp_path / "shared"
    version = var / "models" / "mnist" / "1" / "saved_model.pb"
    version.parent.mkdir(parents=True)
    version.write_text("a published version")
    (var / "cache" / "datasets").mkdir(parents=True)
    ended, lone = new_job_id(), new_job_id()
    _complete(var, ended, 2)
    (var / lone).mkdir()  # a folder of another's, empty, named as a job id
    (var / ended / "notes.txt").write_text("not a checkpoint")  # another's file in a job's
    settings = _reaper_settings(tmp_path, var, "shared")
    reap_once(store, settings, lambda *_: None, sweep_leftovers=False)
    assert version.read_text() == "a published version"
    assert (var / "cache" / "datasets").is_dir() and (var / lone).is_dir()
    assert checkpoint_files.last_epoch(var, ended) is None  # its checkpoint went
    assert [p.name for p in (var / ended).iterdir()] == ["notes.txt"]
    _complete(var, ended, 3)
    store.create({"model": "mnist_logreg"}, ended)
    assert store.mark_running(ended, "celery@resume:3")
    end_run(ended, store, "celery@resume:3", JobStatus.FAILED, None, "test", checkpoints=var)
    assert [p.name for p in (var / ended).iterdir()] == ["notes.txt"]


def test_a_fresh_temporary_folder_survives_a_reaper_whose_clock_runs_ahead(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running job's checkpoint being written (a fresh temporary folder) and a reaper on a
    host whose clock runs an hour ahead of the shared storage's (NFS: file times are the
    server's): the folder is kept, its age read on the storage's clock; one truly stale is
    removed. Before, the reaper's own clock made every write in progress look an hour old, and
    removing it under its writer turned the run's checkpoints off (or renamed a half folder in)."""
    root = tmp_path / "checkpoints"
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, "celery@resume:4")
    _complete(root, job_id, 2)
    fresh, stale = root / job_id / ".tmp-epoch-0003-aaaaaaaaaaaa", root / job_id / ".tmp-x"
    for temp in (fresh, stale):
        temp.mkdir()
        (temp / "state.json").write_text("{}")
    _age(stale, checkpoint_files.STALE_TEMP_S + 60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert checkpoint_files.sweep(store, root) == []
    assert fresh.exists() and not stale.exists()
    assert checkpoint_files.last_epoch(root, job_id) == 2


def test_an_unusable_checkpoint_never_shadows_the_next_runs_ones(
    store: JobStore, tmp_path: Path
) -> None:
    """A job whose checkpoint after epoch 2 cannot be used (damaged): the run that starts over
    writes its own after epochs 1 and 2, and is interrupted; the next run resumes after epoch 2
    from the good one. Before, the damaged one was kept: it shadowed the run's checkpoints of
    epochs below it and, at its own epoch, was as likely taken as the new one (names sort on
    their random part), so the job started over again."""
    import keras
    import numpy as np

    from training.callbacks import JobCallback
    from training.checkpoints import JobCheckpoints

    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    damaged = tmp_path / job_id / "epoch-0002-ffffffffffff"
    damaged.mkdir(parents=True)
    (damaged / "state.json").write_text("{")

    class Interrupted(Exception):
        pass

    class Interrupt(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:
                raise Interrupted

    def fit(*more: Any) -> JobCheckpoints:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        progress = JobCallback(store, job_id, 3, 8, 1)
        checkpoints = JobCheckpoints(tmp_path, job_id, progress, None, "spec", "float32")
        x, y = np.ones((8, 4), "float32"), np.zeros(8, "int32")
        with contextlib.suppress(Interrupted):
            model.fit(x, y, 8, 3, 0, [progress, checkpoints, *more])
        return checkpoints

    assert fit(Interrupt()).resumed == []
    assert fit().resumed == [2]
    assert not damaged.exists()


def test_a_job_killed_after_its_last_epochs_checkpoint_is_evaluated_without_training(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """A job whose checkpoint is after its last epoch (its run killed before the evaluation or
    the publish): the next run trains no epoch, evaluates the checkpoint's weights and
    succeeds, its history the checkpoint's."""
    root = tmp_path / "var" / "checkpoints"
    written, first_loss = _checkpoint_of_a_run(store, data_dir, root)
    job_id = new_job_id()
    shutil.copytree(written, root / job_id / written.name)
    result, record, _models = job_in_process(store, job_id, data_dir, **SMALL)
    assert record["status"] == "succeeded", record
    assert result is not None and result["resumed_after_epoch"] == [1], result
    assert result["epochs_run"] == 1 and result["metrics"]["train_loss"] == first_loss, result
    assert _epochs_reported(store, job_id) == []
    assert not (root / job_id).exists()
