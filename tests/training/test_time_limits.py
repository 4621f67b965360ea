"""How long a job may run (FDL_MAX_JOB_DURATION_S, a spec's max_duration_s): a run past it ends
`failed` with the reason, publishes nothing, and its worker takes the next job; a run stuck where
no check comes is killed by Celery's hard time limit and still ends `failed`. Real Celery workers,
real TensorFlow, a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fdl.jobs import JobStore
from fdl.jobspec import MAX_DURATION_S, JobSpec
from harness.worker import MNIST_TINY, Worker, worker_running, write_stuck_data
from tests.training.stores import store_on_db
from training.settings import WorkerSettings
from training.time_limit import Deadline, TimedOut

DB = 6


def test_the_spec_asks_for_less_time_never_more() -> None:
    settings = WorkerSettings(redis_url="redis://unused", max_job_duration_s=3600)
    assert Deadline.start(settings, 60).limit_s == 60
    assert Deadline.start(settings, 60).source == "its spec's max_duration_s"
    for asked in (None, 7200):
        deadline = Deadline.start(settings, asked)
        assert deadline.limit_s == 3600 and "FDL_MAX_JOB_DURATION_S" in deadline.source
    assert JobSpec(model="mnist_logreg").max_duration_s is None
    for bad in (0, -5, MAX_DURATION_S + 1, 1.5):
        with pytest.raises(ValidationError, match="max_duration_s"):
            JobSpec(model="mnist_logreg", max_duration_s=bad)


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def test_training_stops_at_the_first_check_past_the_deadline(
    store: JobStore, data_dir: Path
) -> None:
    """The check between calls into the training graph (where cancellation is checked)."""
    from training.data.mnist import load_mnist
    from training.trainer import train

    data = load_mnist(data_dir, allow_download=False).capped(256, 64)
    spec = JobSpec(model="mnist_logreg", epochs=200, batch_size=32, validation_split=0)
    store.create(spec.model_dump(mode="json"), "late")
    passed = Deadline(5, "its spec's max_duration_s", time.monotonic())
    started = time.monotonic()
    with pytest.raises(TimedOut) as raised:
        train(spec, data, store, "late", None, False, 4, passed)
    assert str(raised.value) == (
        "ran longer than 5 s (its spec's max_duration_s): stopped in epoch 1 of 200; nothing "
        "was published"
    )
    assert time.monotonic() - started < 60
    assert not store.get("late")["progress"]  # type: ignore[index]  # no epoch ended


def test_a_job_over_its_time_fails_and_the_worker_takes_the_next(
    training_worker: Worker, published_logreg: dict[str, Any]
) -> None:
    """``published_logreg`` first: TensorFlow is imported in the pool process, so the run's 8 s
    mostly go to training, where the deadline is checked every few batches."""
    slow = {**MNIST_TINY, "epochs": 500, "batch_size": 8}
    job_id = training_worker.submit(
        model="mnist_mlp", publish_as="over-time", max_duration_s=8, **slow
    )
    record = training_worker.wait_done(job_id, timeout=180)
    assert record["status"] == "failed", record
    pattern = (
        r"ran longer than 8 s \(its spec's max_duration_s\): stopped "
        r"(in epoch (\d+) of 500|after loading the data|after training, before the quality "
        r"gate); nothing was published"
    )
    assert re.fullmatch(pattern, record["error"]), record["error"]
    assert record["finished_at"] - record["started_at"] < 8 + 30  # stopped, not run out
    assert record["result"] is None and record["attempts"] == 1
    assert not (training_worker.model_dir / "over-time").exists()
    last = training_worker.store.read_events(job_id)[-1][1]
    assert last["type"] == "status" and last["data"]["error"] == record["error"]
    nxt = training_worker.wait_done(
        training_worker.submit(model="mnist_logreg", publish_as="after-over-time", **MNIST_TINY)
    )
    assert nxt["status"] == "succeeded", nxt


@pytest.fixture
def stuck_data(data_dir: Path, tmp_path: Path) -> Path:
    """MNIST and ``stuck``, a dataset whose reading blocks for good (:func:`write_stuck_data`)."""
    return write_stuck_data(data_dir, tmp_path / "data")


def test_a_job_stuck_outside_its_checks_is_killed_and_fails(
    redis_url: str, stuck_data: Path, tmp_path: Path, logs_dir: Path
) -> None:
    env = {
        "FDL_TRAINING_QUEUE": f"fdl-tests-time-limit-{os.getpid()}",
        "FDL_MAX_JOB_DURATION_S": "2",
        # Long enough for a fresh pool process to import TensorFlow and load MNIST (~4 s on a
        # loaded machine): the next job stops at its check after loading, within 2 + 10 s.
        "FDL_JOB_KILL_GRACE_S": "10",
    }
    with worker_running(
        "time-limit-worker", redis_url, stuck_data, tmp_path / "w", logs_dir, env
    ) as worker:
        stuck = worker.submit(model="mnist_logreg", dataset="stuck", **MNIST_TINY)
        worker.wait_status(stuck, {"running"}, timeout=60)
        record = worker.wait_done(stuck, timeout=120)
        assert record["status"] == "failed", (record, worker.process.log_tail())
        assert record["error"] == (
            "ran longer than 2 s (the worker's FDL_MAX_JOB_DURATION_S) and had not stopped 10 s "
            "later (stuck outside the training loop: reading data, or a call that did not "
            "return): its process was killed; nothing was published"
        )
        assert record["finished_at"] - record["started_at"] >= 12 - 1
        # The worker goes on with a new pool process; the worker's own limit applies there too
        # (stopped at its check, or killed where a loaded machine took over 12 s to load).
        nxt = worker.wait_done(worker.submit(model="mnist_logreg", **MNIST_TINY), timeout=120)
        assert nxt["status"] == "failed", (nxt, worker.process.log_tail())
        assert nxt["error"].startswith(
            "ran longer than 2 s (the worker's FDL_MAX_JOB_DURATION_S)"
        ), nxt
        again = worker.store.get(stuck)
        assert again is not None and again["status"] == "failed" and again["attempts"] == 1
        assert not (worker.model_dir / "mnist_logreg").exists()


def test_the_main_process_ends_only_its_own_killed_job(store: JobStore, tmp_path: Path) -> None:
    """What the worker's main process does once a pool process that Celery's hard time limit
    killed is gone, as the reaper decides for a lost job but never queueing it again: a job that
    another run claimed meanwhile (its heartbeat went stale) is left to it; one whose killed run
    had published its version ends succeeded with it; one whose cancellation was requested ends
    cancelled; else failed."""
    from fdl import contract
    from training.publish import publish, staging_dir
    from training.time_limit import end_killed_job

    settings = WorkerSettings(
        redis_url="redis://unused", model_dir=tmp_path / "m", var_dir=tmp_path
    )
    for job_id, worker in (
        ("mine", "celery@a:7"),
        ("theirs", "celery@b:9"),
        ("done", "celery@a:8"),
        ("unwanted", "celery@a:6"),
    ):
        store.create({"model": "mnist_logreg", "publish_as": job_id}, job_id)
        assert store.mark_running(job_id, worker)
    staged = staging_dir(settings.model_dir / "done", "done")
    (staged / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (staged / contract.METADATA_FILE).write_text(json.dumps({"job_id": "done", "metrics": {}}))
    (staged / "saved_model.pb").write_bytes(b"graph")  # a version: it holds a graph
    assert publish(staged, settings.model_dir, "done", "done") == (1, True)
    (settings.model_dir / "models.config").unlink()  # as if its run died before writing it
    assert end_killed_job("theirs", store, settings, "celery@a:9") is None
    assert store.get("theirs")["status"] == "running"  # type: ignore[index]
    assert end_killed_job("mine", store, settings, "celery@a:7") == "failed"
    mine = store.get("mine")
    assert mine is not None and "its process was killed" in mine["error"]
    assert mine["attempts"] == 1 and mine["worker"] == "celery@a:7"
    assert end_killed_job("mine", store, settings, "celery@a:7") is None  # ended once
    assert end_killed_job("done", store, settings, "celery@a:8") == "succeeded"
    assert store.get("done")["result"]["version"] == 1  # type: ignore[index]
    assert 'name: "done"' in (settings.model_dir / "models.config").read_text()
    assert store.request_cancel("unwanted") is not None
    assert end_killed_job("unwanted", store, settings, "celery@a:6") == "cancelled"
    assert store.get("unwanted")["error"].startswith("cancelled by request")  # type: ignore[index]
    assert end_killed_job("nobody", store, settings, "celery@a:5") is None


def test_a_killed_job_is_ended_only_once_its_process_is_gone(
    store: JobStore, tmp_path: Path
) -> None:
    """Celery calls its timeout handler before it kills the pool process: the job waits for
    that process to be gone (a zombie, not yet reaped, is gone), and is left to the reaper when
    it outlives the wait."""
    from training.time_limit import end_job_once_gone, process_gone, process_start

    settings = WorkerSettings(
        redis_url="redis://unused", model_dir=tmp_path / "m", var_dir=tmp_path
    )
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        started = process_start(child.pid)
        assert started is not None and not process_gone(child.pid, started)
        assert process_gone(child.pid, "0")  # another process than the one that started then
        worker = f"celery@a:{child.pid}"
        store.create({"model": "mnist_logreg"}, "slow-death")
        assert store.mark_running("slow-death", worker)
        args = ("slow-death", child.pid, started, store, settings, worker)
        assert end_job_once_gone(*args, wait_s=0.5) is None  # still there: left alone
        assert store.get("slow-death")["status"] == "running"  # type: ignore[index]
        child.kill()
        assert end_job_once_gone(*args, wait_s=60) == "failed"
        assert os.waitpid(child.pid, os.WNOHANG)[0] == child.pid  # it was a zombie
        child.returncode = -signal.SIGKILL
    finally:
        child.kill()
        child.wait(30)


def test_a_run_no_longer_running_its_job_publishes_nothing(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """The record is read once more under the repository's lock, before the rename: a run whose
    job went to another run (or ended) meanwhile leaves the repository and the record alone."""
    from training.job import NotThisRun, execute

    settings = WorkerSettings(
        redis_url="redis://unused",
        data_dir=data_dir,
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        download=False,
    )
    spec = JobSpec(model="mnist_logreg", publish_as="taken", **MNIST_TINY)
    store.create(spec.model_dump(mode="json"), "taken")
    assert store.mark_running("taken", "celery@b:9")  # another run claimed it
    with pytest.raises(NotThisRun):
        execute("taken", spec, store, settings, None, "celery@a:7")
    assert not (settings.model_dir / "taken").exists()
    assert store.get("taken")["status"] == "running"  # type: ignore[index]


def test_a_run_killed_after_its_rename_is_ended_once_its_process_is_gone(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """A run killed after it renamed its version in, stuck holding the repository's lock (the
    config it renders next is a FIFO that nobody writes: hung storage). Celery sends SIGTERM,
    which its pool process turns into SystemExit, then SIGKILL: the job ends only once the
    process is gone, as the repository then says: failed when the publish took its version
    back out on the way (nearly always), succeeded with the version in the config when SIGKILL
    came first. Before, it ended succeeded while the process still held the lock (Celery's loop
    then waited 120 s for the lock in vain, and the process took the version back out after)."""
    from fdl.repository import CONFIG_FILE
    from harness.procs import wait_for
    from training.time_limit import process_gone

    root = tmp_path / "w"
    model_dir = root / "models"
    model_dir.mkdir(parents=True)
    config = model_dir / CONFIG_FILE
    os.mkfifo(config)
    # A writer that never writes: a read of the config gets nothing, and never an end.
    writer = os.open(config, os.O_RDWR)
    env = {
        "FDL_TRAINING_QUEUE": f"fdl-tests-killed-publisher-{os.getpid()}",
        # Long enough for a fresh pool process to import TensorFlow, train and export (~5 s
        # idle, up to ~11 s seen on a loaded machine, over 20 s on one loaded 7 times over) and
        # rename its version in.
        "FDL_MAX_JOB_DURATION_S": "30",
        "FDL_JOB_KILL_GRACE_S": "2",
    }
    try:
        with worker_running("killed-publisher", redis_url, data_dir, root, logs_dir, env) as worker:
            job_id = worker.submit(model="mnist_logreg", publish_as="held", **MNIST_TINY)
            running = worker.wait_status(job_id, {"running"}, timeout=60)
            pid = int(running["worker"].rsplit(":", 1)[1])
            version = model_dir / "held" / "1"
            wait_for(version.is_dir, 45, "the rename", check=worker.process.ensure_alive)
            record = worker.wait_done(job_id, timeout=60)
            assert process_gone(pid), "the job ended while its process was still there"
            if record["status"] == "failed":
                assert "its process was killed" in record["error"], record
                assert not version.exists() and record["attempts"] == 1
                return
            assert record["status"] == "succeeded", (record, worker.process.log_tail())
            assert record["result"]["version"] == 1 and version.is_dir()
            # The storage comes back: the config is rendered with the version.
            unblocked = model_dir / "unblocked"
            unblocked.write_text("")
            os.replace(unblocked, config)
            os.close(writer)
            writer = -1
            wait_for(
                lambda: 'name: "held"' in config.read_text(),
                30,
                "the version in the config",
                check=worker.process.ensure_alive,
            )
    finally:
        if writer >= 0:
            os.close(writer)
