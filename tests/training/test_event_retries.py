"""Event writes of a worker on a real Redis stay single when the store retries them: a
``progress`` or ``log`` event whose write reached Redis but whose reply was lost (a Redis restart
right after it) is appended once, for the event list and the gateway's SSE stream alike, and a
resend whose reply was lost still sends the job's message."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.events import job_events
from fdl.job_records import EVENTS_KEY, JOB_KEY
from fdl.job_scripts import SET_FIELDS_SCRIPT
from fdl.jobs import JobStatus, JobStore
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from tests.training.stores import loaded_store

DB = 7
PROGRESS = {"epoch": 1, "epochs": 2, "loss": 0.5, "accuracy": 0.9}


def _url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


def lossy_store(store: JobStore) -> tuple[JobStore, RedisFaultProxy]:
    """A worker's store (it retries) through a proxy that loses the reply of its first script."""
    kwargs = store.redis.connection_pool.connection_kwargs
    proxy = RedisFaultProxy((kwargs["host"], kwargs["port"]), Rule(b"EVALSHA", "lose_reply", 1))
    return JobStore.from_url(proxy.url(DB), retry_for_s=10), proxy


@pytest.fixture
def lossy(store: JobStore) -> Iterator[tuple[JobStore, RedisFaultProxy]]:
    worker_store, proxy = lossy_store(store)
    with proxy:
        yield worker_store, proxy
        worker_store.redis.close()


def events(store: JobStore, job_id: str) -> list[tuple[str, Any]]:
    """(type, data) of the job's events, oldest first, as the event list reads them."""
    return [(e["type"], e["data"]) for _, e in store.read_events(job_id)]


def record(store: JobStore, job_id: str) -> dict[str, Any]:
    found = store.get(job_id)
    assert found is not None
    return found


def running_job(store: JobStore, job_id: str = "job") -> str:
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, "worker:1")
    return job_id


def sse_messages(redis_url: str, job_id: str) -> list[tuple[str, Any]]:
    """(event, data) of the gateway's SSE stream of the job (it ends after the terminal status)."""

    async def follow() -> list[tuple[str, Any]]:
        client = aioredis.Redis.from_url(_url(redis_url), decode_responses=True)
        try:
            return [
                (m["event"], json.loads(m["data"]))
                async for m in job_events(client, job_id, block_ms=100)
                if "event" in m
            ]
        finally:
            await client.aclose()

    return asyncio.run(asyncio.wait_for(follow(), 10))


def test_a_progress_report_whose_reply_was_lost_is_one_event(
    store: JobStore, lossy: tuple[JobStore, RedisFaultProxy], redis_url: str
) -> None:
    job_id = running_job(store)
    worker_store, proxy = lossy
    assert worker_store.update_progress(job_id, PROGRESS) is True
    assert proxy.fired == 1  # the report ran in Redis, its reply never arrived
    assert record(store, job_id)["progress"] == PROGRESS
    status = [("status", {"status": "queued"}), ("status", {"status": "running"})]
    assert events(store, job_id) == [*status, ("progress", PROGRESS)]
    assert store.finish(job_id, JobStatus.SUCCEEDED, result={"model": "m"})
    ended = ("status", {"status": "succeeded", "result": {"model": "m"}, "error": None})
    assert sse_messages(redis_url, job_id) == [*status, ("progress", PROGRESS), ended]


def test_a_log_event_whose_reply_was_lost_is_appended_once_with_its_id(
    store: JobStore, lossy: tuple[JobStore, RedisFaultProxy]
) -> None:
    job_id = running_job(store)
    worker_store, proxy = lossy
    entry_id = worker_store.append_event(job_id, "log", {"message": "loading dataset mnist"})
    assert proxy.fired == 1
    logs = [(i, e["data"]) for i, e in store.read_events(job_id) if e["type"] == "log"]
    assert logs == [(entry_id, {"message": "loading dataset mnist"})]
    # Later events of the same run are appended as before, equal ones too.
    worker_store.append_event(job_id, "log", {"message": "loading dataset mnist"})
    assert [t for t, _ in events(store, job_id)] == ["status", "status", "log", "log"]


def test_a_new_run_of_the_job_appends_its_own_events(store: JobStore) -> None:
    """A run delivered again after its worker was lost writes the same reports as the first
    run did; each run's are appended once, also when a reply of each is lost."""
    job_id = running_job(store)
    for run in (1, 2):
        worker_store, proxy = lossy_store(store)
        with proxy:
            if run == 2:  # the first run's worker was lost; a claim of it lets this one in
                store.set_fields(job_id, heartbeat_at=time.time() - 600)
                assert store.mark_running(job_id, "worker:2", time.time() - 5)
            assert worker_store.update_progress(job_id, PROGRESS)
            worker_store.redis.close()
        assert proxy.fired == 1
    kinds = [t if t == "progress" else d["status"] for t, d in events(store, job_id)]
    assert kinds == ["queued", "running", "progress", "running", "progress"]


def test_a_replay_after_a_status_event_in_between_appends_nothing(store: JobStore) -> None:
    """The reaper's or gateway's status event between a write and its retry does not hide the
    retry: the scripts that write status events keep the event token of the last report."""
    job_id = running_job(store)
    script = store.redis.register_script(SET_FIELDS_SCRIPT)
    keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)]
    args = ["progress", json.dumps(PROGRESS), str(time.time()), uuid.uuid4().hex]
    first = script(keys=keys, args=args)
    assert store.finish(job_id, JobStatus.FAILED, error="lost")
    assert script(keys=keys, args=args) == first
    kinds = [t if t == "progress" else d["status"] for t, d in events(store, job_id)]
    assert kinds == ["queued", "running", "progress", "failed"]


def test_a_resend_whose_reply_was_lost_still_sends_the_message(
    store: JobStore, lossy: tuple[JobStore, RedisFaultProxy]
) -> None:
    store.create({"model": "mnist_logreg"}, "waiting", "training")
    store.set_fields("waiting", sent_at=time.time() - 600)
    reaper_store, proxy = lossy
    assert reaper_store.mark_resent("waiting", 60) is True  # the caller sends the message
    assert proxy.fired == 1
    assert record(store, "waiting")["resends"] == 1
    assert reaper_store.mark_resent("waiting", 60) is False  # not due again yet
