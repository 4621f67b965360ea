"""A job's run handed back (its worker stopping) or lost (its pool process SIGKILLed) resumes
from the job's last checkpoint instead of starting over (training/checkpoints.py): real workers,
Redis and TensorFlow on tiny data. A resumed run goes on with its job's accounting: its time
limit and train_seconds count the checkpoint's training seconds, and its reports of an epoch
that an earlier run had reported say ``redone``. How a checkpoint is taken:
test_checkpoint_loading.py; where checkpoints lie and who removes them:
test_checkpoint_storage.py."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.jobs import JobStore, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import enqueue_training
from harness.procs import wait_for
from harness.worker import Worker, start_worker
from tests.training.checkpoint_jobs import (
    SMALL,
    checkpoint_of_a_run,
    checkpoint_store,
    epoch_reports,
    epochs_reported,
    events,
    notes,
    set_state,
    tiny_fit,
    train_small,
)
from training import checkpoint_files
from training.time_limit import Deadline

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


def _checkpoint_after(worker: Worker, job_id: str, epoch: int) -> Path | None:
    found = checkpoint_files.newest(worker.var_dir / "checkpoints", job_id)
    return found[1] if found and found[0] >= epoch else None


def _metadata(worker: Worker, result: dict[str, Any]) -> dict[str, Any]:
    path = worker.model_dir / result["model"] / str(result["version"]) / "assets.extra"
    return json.loads((path / "metadata.json").read_text())


def _resumed_whole(worker: Worker, job_id: str, done: dict[str, Any], run: str) -> None:
    """The job ended ``succeeded`` after a run that resumed after epoch 2 from ``run``'s
    checkpoint: each epoch reported once (an epoch after 2 that ``run`` reported before it was
    killed is reported again marked ``redone``), the optimizer's steps those of 4 epochs, and its
    checkpoints removed."""
    assert done["status"] == "succeeded", (done, worker.process.log_tail())
    reports = [(r["epoch"], r.get("redone", False)) for r in epoch_reports(worker.store, job_id)]
    first = [epoch for epoch, redone in reports if not redone]
    again = [epoch for epoch, redone in reports if redone]
    assert first == sorted(set(first)) and set(first) | set(again) == {1, 2, 3, 4}, reports
    assert all(epoch > 2 and epoch in first for epoch in again), reports
    said = notes(worker.store, job_id)
    assert f"resumed after epoch 2 from the checkpoint written by {run}" in said, said
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
            lambda: 2 in epochs_reported(first.store, job_id),
            120,
            "epoch 2 reported",
            interval=0.02,
            check=first.process.ensure_alive,
        )
        os.kill(first.process.pid, signal.SIGTERM)
        assert first.process.popen.wait(15) == 0, first.process.log_tail()
    finally:
        first.process.stop()
    handed = [e["data"] for e in events(first.store, job_id) if e["data"].get("handed_back")]
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
    statuses = [e["data"]["status"] for e in events(worker.store, job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"], statuses


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from checkpoint_store(redis_url)


def _deadline(limit_s: float) -> Deadline:
    return Deadline(limit_s, "its spec's max_duration_s", time.monotonic() + limit_s)


def _seconds(checkpoint: Path) -> float:
    return float(json.loads((checkpoint / "state.json").read_text())["train_seconds"])


def test_a_resumed_run_has_what_is_left_of_its_jobs_time_limit(
    store: JobStore, tmp_path: Path
) -> None:
    """A run interrupted after epoch 2 of 3: its checkpoint keeps the job's training seconds up
    to that epoch. Runs that resume from it, the seconds set to 100 as if earlier runs had
    trained that long, have what is left of the limit: 100 s leave none, and the run stops in
    epoch 3 saying so, writing no checkpoint; 1000 s leave 900, and the run trains epoch 3, its
    job's seconds going on from 100. Before, each run had the whole limit and counted its
    seconds from 0."""
    job_id, late = new_job_id(), new_job_id()
    for each in (job_id, late):
        store.create({"model": "mnist_logreg"}, each)
    tiny_fit(store, job_id, tmp_path, interrupt_after=2, deadline=_deadline(1000))
    found = checkpoint_files.newest(tmp_path, job_id)
    assert found is not None and found[0] == 2 and 0 < _seconds(found[1]) < 100, found
    set_state(found[1], train_seconds=100.0)
    shutil.copytree(found[1], tmp_path / late / found[1].name)
    deadline = _deadline(100)
    progress, _ = tiny_fit(store, late, tmp_path, deadline=deadline)
    assert progress.timed_out == "in epoch 3 of 3", progress.history
    assert deadline.error(progress.timed_out) == (
        "ran longer than 100 s (its spec's max_duration_s; 100 s of them trained by its earlier "
        "runs, up to its checkpoint after epoch 2, which this run resumed from): stopped in "
        "epoch 3 of 3; nothing was published"
    )
    assert checkpoint_files.last_epoch(tmp_path, late) == 2
    progress, _ = tiny_fit(store, job_id, tmp_path, deadline=_deadline(1000))
    assert progress.timed_out is None and len(progress.history) == 3
    found = checkpoint_files.newest(tmp_path, job_id)
    assert found is not None and found[0] == 3 and 100 < _seconds(found[1]) < 200, found
    assert 100 < progress.train_seconds() < 200


def test_a_job_resumed_out_of_time_fails_and_train_seconds_go_on(
    store: JobStore, job_in_process: Any, data_dir: Path, tmp_path: Path
) -> None:
    """A job whose checkpoint (after its one epoch) says that its earlier runs trained for the
    worker's whole FDL_MAX_JOB_DURATION_S (no limit in its spec): its run trains nothing and
    fails before the quality gate, naming those seconds. With 100 of them, ``train`` reports the
    job's train_seconds from 100 on. Before, the run had the whole limit again and succeeded,
    and its train_seconds were its own."""
    root = tmp_path / "var" / "checkpoints"
    written, _loss = checkpoint_of_a_run(store, data_dir, root)
    late, resumed = new_job_id(), new_job_id()
    for job_id, seconds in ((late, 600.0), (resumed, 100.0)):
        shutil.copytree(written, root / job_id / written.name)
        set_state(root / job_id / written.name, train_seconds=seconds)
    limit = {"max_job_duration_s": 600}
    result, record, _models = job_in_process(store, late, data_dir, limit, **SMALL)
    assert result is None and record["status"] == "failed", record
    assert record["error"] == (
        "ran longer than 600 s (the worker's FDL_MAX_JOB_DURATION_S; 600 s of them trained by "
        "its earlier runs, up to its checkpoint after epoch 1, which this run resumed from): "
        "stopped after training, before the quality gate; nothing was published"
    )
    outcome = train_small(store, data_dir, root, resumed)
    assert outcome.runtime["resumed_after_epoch"] == [1], outcome.runtime
    assert 100 <= outcome.runtime["train_seconds"] < 200, outcome.runtime


def test_an_epoch_that_a_lost_run_reported_is_marked_redone_when_run_again(
    store: JobStore, tmp_path: Path
) -> None:
    """A run that reported epoch 2's end and stopped before its checkpoint (as a SIGKILL between
    the two stops it): the next run resumes after epoch 1 and runs epoch 2 again, after a note
    that says so; its report of epoch 2 says ``redone`` (the record's progress and the UI's
    chart, which keys its points by epoch, take it in the earlier one's place), epoch 3's does
    not, and the history kept has each epoch once. A run that starts over (the checkpoints
    gone) marks all three. Before, the job's events had two reports of epoch 2, alike."""
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    tiny_fit(store, job_id, tmp_path, interrupt_after=2, before_checkpoint=True)
    assert checkpoint_files.last_epoch(tmp_path, job_id) == 1
    progress, checkpoints = tiny_fit(store, job_id, tmp_path)
    assert checkpoints.resumed == [1]
    marks = [(r["epoch"], r.get("redone", False)) for r in epoch_reports(store, job_id)]
    assert marks == [(1, False), (2, False), (2, True), (3, False)], marks
    assert notes(store, job_id)[-1] == (
        "epoch 2, which an earlier run of the job reported, is run again (this run resumed "
        "after epoch 1, its last checkpoint): its reports of it say redone and replace the "
        "earlier ones"
    )
    assert [entry["epoch"] for entry in progress.history] == [1, 2, 3]
    assert not any("redone" in entry for entry in progress.history)
    shutil.rmtree(tmp_path / job_id)
    tiny_fit(store, job_id, tmp_path)
    marks = [(r["epoch"], r.get("redone", False)) for r in epoch_reports(store, job_id)]
    assert marks[4:] == [(1, True), (2, True), (3, True)], marks
    assert notes(store, job_id)[-1].startswith("epochs 1 to 3, which an earlier run of the job")
