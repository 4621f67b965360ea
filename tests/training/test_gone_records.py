"""A job whose record is gone (pruned by retention, deleted, lost with Redis's data) stays gone:
its worker's late heartbeats, progress reports and log events write nothing (before, each was a
plain write that made a record of only those fields, and an event stream that nothing pruned),
and the worker is told to stop. On a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.job_records import EVENTS_KEY, JOB_KEY
from fdl.jobs import JobStatus, JobStore
from training.job import run_job
from training.settings import WorkerSettings

DB = 4


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{DB}", decode_responses=True)
    client.flushdb()
    yield JobStore(client)
    client.close()


def late_reports(store: JobStore, job_id: str) -> list[object]:
    """What a worker still running ``job_id`` writes, and what each call answered."""
    return [
        store.heartbeat(job_id),
        store.update_progress(job_id, {"epoch": 3, "epochs": 5}),
        store.set_fields(job_id, heartbeat_at=store.now()),
        store.append_event(job_id, "log", {"message": "still here"}),
    ]


def test_late_reports_of_a_pruned_job_write_nothing(store: JobStore) -> None:
    store.create({"model": "mnist_logreg"}, "pruned", "training")
    assert store.mark_running("pruned", "worker:1")
    store.update_progress("pruned", {"epoch": 1, "epochs": 5})  # live: written
    assert store.finish("pruned", JobStatus.FAILED, error="its worker was lost")
    assert store.prune(store.now() + 1) == ["pruned"]
    answers = late_reports(store, "pruned")
    assert store.redis.exists(JOB_KEY.format("pruned"), EVENTS_KEY.format("pruned")) == 0
    assert store.get("pruned") is None and store.read_events("pruned") == []
    assert answers == [False, False, False, None]  # the worker can tell


def test_reports_for_a_job_that_never_existed_write_nothing(store: JobStore) -> None:
    answers = late_reports(store, "nobody")
    assert store.redis.keys("*") == []
    assert answers == [False, False, False, None]


def test_reports_of_a_live_job_are_written_with_their_events(store: JobStore) -> None:
    store.create({"model": "mnist_logreg"}, "live", "training")
    assert store.mark_running("live", "worker:1")
    answers = late_reports(store, "live")
    assert answers[:3] == [True, True, True] and isinstance(answers[3], str)
    record = store.get("live")
    assert record["progress"] == {"epoch": 3, "epochs": 5} and record["status"] == "running"
    kinds = [event["type"] for _, event in store.read_events("live")]
    assert kinds == ["status", "status", "progress", "log"]


def test_the_worker_stops_a_job_that_was_cancelled_or_whose_record_is_gone(
    store: JobStore, tmp_path: Path
) -> None:
    store.create({"model": "mnist_logreg"}, "job", "training")
    assert store.mark_running("job", "worker:1")
    assert not store.stop_requested("job")
    store.request_cancel("job")
    assert store.stop_requested("job")
    assert store.stop_requested("never-existed")
    # What an older worker's late heartbeat left: fields without a status, not a job.
    store.redis.hset(JOB_KEY.format("leftover"), "heartbeat_at", "1.5")
    assert store.stop_requested("leftover")
    assert not store.set_fields("leftover", progress={})
    # A message for it is skipped like one for an unknown job (before: a ValueError).
    settings = WorkerSettings(redis_url="redis://unused", model_dir=tmp_path, var_dir=tmp_path)
    assert run_job("leftover", store, settings) is None
    assert store.redis.hgetall(JOB_KEY.format("leftover")) == {"heartbeat_at": "1.5"}
