"""A job whose record is gone (pruned by retention, deleted, lost with Redis's data) stays gone:
its worker's late heartbeats, progress reports and log events write nothing (before, each was a
plain write that made a record of only those fields, and an event stream that nothing pruned),
and the worker is told to stop. On a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStatus, JobStore
from tests.training.stores import store_on_db
from training.job import run_job
from training.reaper import reap_once
from training.settings import WorkerSettings

DB = 4


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


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


def test_what_older_workers_left_of_pruned_jobs_is_removed_after_the_retention(
    store: JobStore, tmp_path: Path
) -> None:
    """Workers older than SET_FIELDS_SCRIPT, reporting after the reaper pruned their job, left a
    hash of only heartbeat/progress fields and an event stream, which no index entry names, so
    prune never saw them and they stayed in Redis. The reaper's leftover sweep (SCAN, over
    several steps here) removes them once older than the retention, and nothing else."""
    day = 86400.0
    now = store.now()
    old, recent = json.dumps(now - 40 * day), json.dumps(now - day)
    redis_ = store.redis
    redis_.hset(JOB_KEY.format("old-beat"), mapping={"heartbeat_at": old, "progress": "{}"})
    redis_.hset(JOB_KEY.format("old-both"), mapping={"heartbeat_at": old})
    redis_.xadd(EVENTS_KEY.format("old-both"), {"type": "log"}, id=f"{int(old_ms(now))}-0")
    redis_.xadd(EVENTS_KEY.format("old-stream"), {"type": "log"}, id=f"{int(old_ms(now))}-0")
    redis_.hset(JOB_KEY.format("recent-beat"), mapping={"heartbeat_at": recent})
    redis_.hset(JOB_KEY.format("old-beat-new-events"), mapping={"heartbeat_at": old})
    redis_.xadd(EVENTS_KEY.format("old-beat-new-events"), {"type": "log"})
    redis_.xadd(EVENTS_KEY.format("recent-stream"), {"type": "log"})
    redis_.hset(JOB_KEY.format("timeless"), mapping={"progress": "{}"})
    redis_.set(JOB_KEY.format("not-a-hash"), "x")
    many = [f"many-{i}" for i in range(2500)]  # more keys than one SCAN step looks at
    pipe = redis_.pipeline(transaction=False)
    for job_id in many:
        pipe.hset(JOB_KEY.format(job_id), "heartbeat_at", old)
    pipe.execute()
    # Real jobs are never touched, whatever their age: an indexed one ended long ago (prune's
    # to decide; it is within the retention here), a live one, one whose index entry is gone.
    for job_id in ("ended", "live", "unindexed"):
        store.create({"model": "mnist_logreg"}, job_id, "training")
        store.set_fields(job_id, created_at=now - 40 * day)
    store.finish("ended", JobStatus.SUCCEEDED, result={})
    store.finish("unindexed", JobStatus.FAILED, error="x")
    store.set_fields("unindexed", finished_at=now - 40 * day)
    redis_.zrem(INDEX_KEY, "unindexed")
    assert store.mark_running("live", "worker:1")
    settings = WorkerSettings(
        redis_url="redis://unused", model_dir=tmp_path, var_dir=tmp_path, job_retention_s=30 * day
    )

    def leftovers(actions: list[tuple[str, str]]) -> set[str]:
        return {job_id for job_id, action in actions if action == "pruned"}

    # Without the sweep (the reaper thread runs it once an hour) nothing goes: prune alone
    # never saw these keys.
    assert leftovers(reap_once(store, settings, lambda *_: None, sweep_leftovers=False)) == set()
    assert leftovers(reap_once(store, settings, lambda *_: None)) == {
        "old-beat",
        "old-both",
        "old-stream",
        *many,
    }
    for job_id in ("old-beat", "old-both", "old-stream", "many-0", "many-2499"):
        assert redis_.exists(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)) == 0
    kept = ("recent-beat", "old-beat-new-events", "recent-stream", "timeless", "not-a-hash")
    for job_id in kept:
        assert redis_.exists(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)) >= 1, job_id
    assert {record["id"] for record in store.list(limit=10)[0]} == {"ended", "live"}
    assert store.get("unindexed")["status"] == "failed"  # type: ignore[index]
    # A hash that holds no time was stamped when first seen, and goes once that is old enough.
    seen = float(redis_.hget(JOB_KEY.format("timeless"), "leftover_seen_at") or 0)
    assert now <= seen <= store.now()
    assert sorted(store.prune_leftovers(seen + 1)) == [
        "old-beat-new-events",
        "recent-beat",
        "recent-stream",
        "timeless",
    ]
    assert sorted(redis_.keys(JOB_KEY.format("*"))) == sorted(
        [JOB_KEY.format(i) for i in ("ended", "live", "unindexed", "not-a-hash")]
        + [EVENTS_KEY.format(i) for i in ("ended", "live", "unindexed")]
    )


def old_ms(now: float) -> float:
    """A stream entry id's time 40 days before ``now`` (milliseconds)."""
    return (now - 40 * 86400.0) * 1000
