"""A finished job whose publish finds the model repository's lock held by another writer (a
gateway replica hung mid-promotion, a stuck `fdl up`, slow NFS) waits for it in rounds of
FDL_PUBLISH_LOCK_WAIT_S instead of failing after one and throwing its training away: between
rounds it says that it waits (a `log` event), keeps its heartbeat and its export, and stops
when it is cancelled or out of time. Before, the job failed with `Timeout` after 120 s and its
export was deleted. Real Redis, real TensorFlow, a real file lock held by a thread of the test
while the job runs in the test's own thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from fdl.jobs import JobStore
from fdl.repository import LOCK_FILE
from fdl.repository_reads import list_versions
from harness.procs import wait_for
from tests.training.stores import store_on_db
from training.publish import sweep_staging

DB = 9
WAITING = "waiting for the model repository's lock"
TIME_TEXT = "stopped while it waited for the model repository's lock; nothing was published"
# Shorter than the 120 s a job waited before, so that a job that does not wait in rounds
# (the code before this change) is still waiting when the holder gives the lock up.
HOLD_AT_MOST_S = 100.0
TINY: dict[str, Any] = {"model": "mnist_logreg", "max_train_examples": 96, "publish_as": "m"}
SETTINGS: dict[str, Any] = {"publish_lock_wait_s": 1, "heartbeat_interval_s": 0.2}


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


class LockHolder(threading.Thread):
    """Another writer: holds the repository's lock (a real ``FileLock`` on its lock file) from
    before the job reaches its publish until ``release()``, polled from this thread, returns
    true, or at most ``HOLD_AT_MOST_S``; ``error`` says when it gave up instead."""

    def __init__(self, model_dir: Path, release: Callable[[], bool]) -> None:
        super().__init__(name="lock-holder", daemon=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(model_dir / LOCK_FILE, thread_local=False)
        self.release = release
        self.held = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        with self.lock:
            self.held.set()
            try:
                wait_for(self.release, HOLD_AT_MOST_S, "the moment to give the lock up")
            except BaseException as error:  # reported by the test, in its own thread
                self.error = error

    def __enter__(self) -> LockHolder:
        self.start()
        assert self.held.wait(30), "the holder did not get the lock"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.join(HOLD_AT_MOST_S + 30)
        assert not self.is_alive()


def waits(store: JobStore, job_id: str) -> list[str]:
    """The job's events that say it waits for the repository's lock."""
    return [
        str(event["data"]["message"])
        for _id, event in store.read_events(job_id, count=10_000)
        if event["type"] == "log" and str(event["data"].get("message")).startswith(WAITING)
    ]


def staged(model_dir: Path, job_id: str) -> list[Path]:
    return list(model_dir.glob(f".tmp-m-{job_id}-*"))


def ended(store: JobStore, job_id: str) -> bool:
    record = store.get(job_id)
    return record is not None and record["status"] in ("succeeded", "failed", "cancelled")


def test_a_finished_job_waits_for_the_lock_and_publishes_once_it_is_free(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    job_id, model_dir = "waits", tmp_path / "models"
    seen: dict[str, Any] = {}

    def release() -> bool:
        """After the first round: the heartbeat and the export as they are; after 6 s more
        (6 rounds), a sweep that removes what nothing changed for 5 s (as another job's
        staging does, with hours), then the same again; then the lock is given up."""
        rounds = waits(store, job_id)
        if not rounds:
            return False
        record = store.get(job_id)
        assert record is not None
        now = (len(rounds), float(record["heartbeat_at"]), staged(model_dir, job_id))
        first = seen.setdefault("first", (*now, time.monotonic()))
        if time.monotonic() - first[3] < 6:
            return False
        seen["swept"] = sweep_staging(model_dir, stale_after_s=5)
        seen["then"] = (len(waits(store, job_id)), *now[1:])
        return True

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(store, job_id, data_dir, SETTINGS, **TINY)
    assert holder.error is None, (holder.error, record)
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"] and result["version"] == 1
    assert list_versions(model_dir / "m") == [1]
    assert not staged(model_dir, job_id)  # moved in as the version

    rounds, beat, export, _ = seen["first"]
    later_rounds, later_beat, later_export = seen["then"]
    assert rounds >= 1 and later_rounds >= rounds + 3, seen  # one event per round of 1 s
    assert later_beat > beat, seen  # the heartbeat thread went on while the job waited
    assert len(export) == 1 and later_export == export, seen  # the export stayed
    assert seen["swept"] == [], seen  # marked in use each round: never taken for a dead run's
    message = waits(store, job_id)[-1]
    assert message.startswith(f"{WAITING} (") and f"{LOCK_FILE}), which another writer" in message
    assert message.endswith(" s so far"), message


def test_a_cancel_while_it_waits_ends_it_cancelled_with_nothing_published(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    job_id, model_dir = "cancelled-waiting", tmp_path / "models"
    seen: dict[str, Any] = {}

    def release() -> bool:
        """Once the job waits: a cancel; the lock is given up only once the job has ended."""
        if "cancelled" not in seen:
            if not waits(store, job_id):
                return False
            seen["export"] = staged(model_dir, job_id)
            seen["cancelled"] = store.request_cancel(job_id)
        return ended(store, job_id)

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(store, job_id, data_dir, SETTINGS, **TINY)
    assert holder.error is None, (holder.error, record)  # it ended while the lock was held
    assert seen["cancelled"]["status"] == "running" and len(seen["export"]) == 1, seen
    assert result is None
    assert record["status"] == "cancelled" and record["error"] == "cancelled by request"
    assert not list_versions(model_dir / "m")
    assert not staged(model_dir, job_id)  # its export was removed


def test_its_time_limit_while_it_waits_ends_it_failed_with_nothing_published(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """25 s for the run: the tiny job reaches its publish in under 10 s, then waits."""
    job_id, model_dir = "late-waiting", tmp_path / "models"
    seen: dict[str, Any] = {}

    def release() -> bool:
        """The lock is given up only once the job has ended."""
        if "export" not in seen and waits(store, job_id):
            seen["export"] = staged(model_dir, job_id)
        return ended(store, job_id)

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(
            store, job_id, data_dir, SETTINGS, max_duration_s=25, **TINY
        )
    assert holder.error is None, (holder.error, record)  # it ended while the lock was held
    assert result is None
    assert record["status"] == "failed"
    assert record["error"] == f"ran longer than 25 s (its spec's max_duration_s): {TIME_TEXT}"
    assert len(seen["export"]) == 1, seen  # it waited with its export
    assert not list_versions(model_dir / "m")
    assert not staged(model_dir, job_id)


def test_a_run_whose_job_another_run_took_stops_waiting_with_nothing_published(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """A reaper that took the waiting job for lost gave it to another worker: this run stops
    waiting at its next round, publishes nothing and leaves the record to the other run."""
    job_id, model_dir = "taken-waiting", tmp_path / "models"
    seen: dict[str, Any] = {}

    def release() -> bool:
        """Once the job waits: the record names another worker; the lock is given up only once
        this run has stopped (its export removed)."""
        if "taken" not in seen:
            if not waits(store, job_id):
                return False
            seen["taken"] = store.set_fields(job_id, worker="other-node:2")
            seen["export"] = staged(model_dir, job_id)
        return not staged(model_dir, job_id)

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(store, job_id, data_dir, SETTINGS, **TINY)
    assert holder.error is None, (holder.error, record)  # it stopped while the lock was held
    assert seen["taken"] and len(seen["export"]) == 1, seen
    assert result is None
    assert record["status"] == "running" and record["worker"] == "other-node:2", record
    assert not list_versions(model_dir / "m")
