"""A finished job whose publish finds the model repository's lock held by another writer (a
gateway replica hung mid-promotion, a stuck `fdl up`, slow NFS) waits for it in rounds of
FDL_PUBLISH_LOCK_WAIT_S instead of failing after one and throwing its training away: between
rounds it says that it waits (a `log` event), keeps its heartbeat and its export, and stops
when it is cancelled or out of time. Before, the job failed with `Timeout` after 120 s and its
export was deleted. Real Redis, real TensorFlow, a real file lock held by a thread of the test
while the job runs in the test's own thread."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl import contract
from fdl.jobs import JobStore
from fdl.repository import LOCK_FILE
from fdl.repository_reads import list_versions
from tests.training.lock_wait import SETTINGS, TINY, WAITING, LockHolder, staged, waits
from tests.training.stores import store_on_db
from training.publish import sweep_staging

DB = 9
TIME_TEXT = "stopped while it waited for the model repository's lock; nothing was published"


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


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


def put_version(model_dir: Path, job_id: str, accuracy: float) -> None:
    """Version 1 of model ``m`` with its files, written as a writer holding the lock writes it,
    published by job ``job_id`` with test accuracy ``accuracy``."""
    version = model_dir / "m" / "1"
    for folder in ("variables", contract.ASSETS_EXTRA_DIR):
        (version / folder).mkdir(parents=True, exist_ok=True)
    (version / "saved_model.pb").write_bytes(b"graph")
    # Tested on the 64 MNIST images that job_in_process's jobs test on: comparable with them.
    dataset = {"name": "mnist", "layout": "idx", "test": 64}
    metadata = {"job_id": job_id, "dataset": dataset, "metrics": {"test_accuracy": accuracy}}
    (version / contract.METADATA_FILE).write_text(json.dumps(metadata))


def test_the_result_gives_the_reason_of_the_gate_under_the_lock(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """With only_if_better, the job passes its first gate with no version published; while it
    waits, the lock's holder publishes a worse version 1. The gate under the lock passes again,
    and the result's reason is that check's, naming version 1 (before, it kept the first
    gate's "no version published before", stale after the wait)."""
    job_id, model_dir = "reason-after-wait", tmp_path / "models"

    def release() -> bool:
        """Once the job waits: a version 1 of accuracy 0.05 with its files, written as a
        writer holding the lock writes it; then the lock is given up."""
        if not waits(store, job_id):
            return False
        put_version(model_dir, "other-job", 0.05)
        return True

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(
            store, job_id, data_dir, SETTINGS, publish={"only_if_better": True}, **TINY
        )
    assert holder.error is None, (holder.error, record)
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"] and result["version"] == 2, result
    accuracy = result["metrics"]["test_accuracy"]
    assert result["reason"] == (
        f"test accuracy {accuracy:.4f} >= publish.min_accuracy 0.0000 and better than the "
        "served version 1 (0.0500)"
    ), result
    assert record["result"]["reason"] == result["reason"]
    assert list_versions(model_dir / "m") == [1, 2]


def test_a_version_another_run_of_the_job_put_in_meanwhile_gives_the_result(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """While the job waits for the lock, another run of the same job (a reaper's, after this
    one's worker seemed lost) puts its version in. This run publishes nothing more, and its
    result is that version's: its metrics and the reason that names it (before, this run's
    metrics and gate reason were recorded for the other run's model)."""
    job_id, model_dir = "another-run-published", tmp_path / "models"

    def release() -> bool:
        if not waits(store, job_id):
            return False
        put_version(model_dir, job_id, 0.1234)
        return True

    with LockHolder(model_dir, release) as holder:
        result, record, _ = job_in_process(store, job_id, data_dir, SETTINGS, **TINY)
    assert holder.error is None, (holder.error, record)
    assert record["status"] == "succeeded", record["error"]
    assert result is not None and result["published"] and result["version"] == 1, result
    assert result["metrics"] == {"test_accuracy": 0.1234}, result
    assert result["reason"] == "version 1 was published by an earlier run of this job", result
    assert record["result"]["metrics"] == result["metrics"]
    assert list_versions(model_dir / "m") == [1] and not staged(model_dir, job_id)
