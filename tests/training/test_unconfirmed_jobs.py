"""The reaper's watch of queued jobs on a real Redis, for records whose message the gateway never
confirmed sent (``enqueued: false``): such a job is ended ``failed`` when its message would be
sent again, never sent; a confirmed one, and one written before records had the field, is sent
again as before; a confirmation and the reaper decide one outcome between them. The gateway's
side (a real gateway through a proxy that cuts Redis off):
tests/api/test_unconfirmed_submissions.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl.job_records import JOB_KEY, NOT_CONFIRMED
from fdl.jobs import JobStore
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from tests.training.stores import loaded_store
from training.reaper import reap_once
from training.settings import WorkerSettings

DB = 13
SPEC = {"model": "mnist_logreg"}
RESEND_AFTER_S = 60.0


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


def settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        training_queue="training",
        resend_queued_after_s=RESEND_AFTER_S,
        stale_after_s=60,
    )


class Sent(list[str]):
    def __call__(self, job_id: str, _queue: str, _max_duration_s: float | None = None) -> None:
        self.append(job_id)


def overdue(store: JobStore, *job_ids: str, field: str = "created_at") -> None:
    """Make the jobs' messages due to be sent again: sent (else created) a period ago."""
    for job_id in job_ids:
        store.redis.hset(JOB_KEY.format(job_id), field, json.dumps(time.time() - RESEND_AFTER_S))


def statuses(store: JobStore, job_id: str) -> list[str]:
    return [e["data"]["status"] for _, e in store.read_events(job_id) if e["type"] == "status"]


def test_only_a_job_never_confirmed_is_ended_instead_of_resent(
    store: JobStore, tmp_path: Path
) -> None:
    store.create(SPEC, "refused", "training", unconfirmed=True)  # 503: no message, no `failed`
    store.create(SPEC, "confirmed", "training", unconfirmed=True)
    assert store.confirm_sent("confirmed") is True
    store.create(SPEC, "older", "training")  # as gateways before the field wrote it
    assert not store.redis.hexists(JOB_KEY.format("older"), "enqueued")
    overdue(store, "refused", "confirmed", "older")
    sent = Sent()
    actions = reap_once(store, settings(tmp_path), sent)
    assert sorted(actions) == [("confirmed", "resent"), ("older", "resent"), ("refused", "failed")]
    assert sorted(sent) == ["confirmed", "older"]
    ended = store.get("refused")
    assert ended is not None and ended["status"] == "failed" and ended["error"] == NOT_CONFIRMED
    assert statuses(store, "refused") == ["queued", "failed"]
    # A late confirmation changes nothing, and says so; a worker's claim skips the job.
    assert store.confirm_sent("refused") is False
    assert not store.mark_running("refused", "some-worker:1")
    assert store.confirm_sent("gone") is None  # no record is left behind either
    assert not store.redis.exists(JOB_KEY.format("gone"))


def test_a_confirmation_after_a_worker_took_the_job_changes_only_the_mark(
    store: JobStore,
) -> None:
    store.create(SPEC, "quick", "training", unconfirmed=True)
    assert store.mark_running("quick", "fast-worker:1")  # the message outran the confirmation
    assert store.confirm_sent("quick") is True
    record = store.get("quick")
    assert record is not None and record["status"] == "running" and record["enqueued"] is True
    assert statuses(store, "quick") == ["queued", "running"]


def test_a_job_taken_before_its_confirmation_and_then_lost_is_resent(
    store: JobStore, tmp_path: Path
) -> None:
    # A worker got the message before the gateway confirmed it, which it then could not; the
    # worker was lost: the reaper requeues the job and sends it itself, so it is confirmed.
    store.create(SPEC, "taken", "training", unconfirmed=True)
    assert store.mark_running("taken", "dead-worker:1")
    store.redis.hset(JOB_KEY.format("taken"), "heartbeat_at", json.dumps(time.time() - 600))
    sent = Sent()
    assert reap_once(store, settings(tmp_path), sent) == [("taken", "requeued")]
    record = store.get("taken")
    assert record is not None and record["enqueued"] is True
    # Its message lost again: sent again, not ended.
    overdue(store, "taken", field="sent_at")
    assert reap_once(store, settings(tmp_path), sent) == [("taken", "resent")]
    assert sent == ["taken", "taken"]


def test_an_end_whose_reply_was_lost_answers_the_same_once(store: JobStore, tmp_path: Path) -> None:
    store.create(SPEC, "refused", "training", unconfirmed=True)
    overdue(store, "refused")
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"EVALSHA", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        reaper_store = JobStore.from_url(proxy.url(DB), retry_for_s=10)
        try:
            assert reaper_store.resend_or_end("refused", RESEND_AFTER_S) == "failed"
        finally:
            reaper_store.redis.close()
    assert lost.fired == 1  # the end ran in Redis; its reply never arrived, the retry answered
    assert statuses(store, "refused") == ["queued", "failed"]


def test_confirmations_racing_the_reaper_each_get_one_outcome(store: JobStore) -> None:
    jobs = [f"job-{n}" for n in range(200)]
    for job_id in jobs:
        store.create(SPEC, job_id, "training", unconfirmed=True)
    overdue(store, *jobs)
    confirmed: dict[str, bool | None] = {}
    reaped: dict[str, str] = {}
    start = threading.Barrier(2)

    def confirm() -> None:
        start.wait()
        for job_id in jobs:
            confirmed[job_id] = store.confirm_sent(job_id)

    def reap() -> None:
        start.wait()
        for job_id in reversed(jobs):  # the two meet half way
            reaped[job_id] = store.resend_or_end(job_id, RESEND_AFTER_S)

    threads = [threading.Thread(target=confirm), threading.Thread(target=reap)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(confirmed) == len(reaped) == len(jobs)
    for job_id in jobs:
        record = store.get(job_id)
        assert record is not None
        if confirmed[job_id]:  # confirmed first: sent again (the reaper's due message)
            assert reaped[job_id] == "resent" and record["status"] == "queued", record
            assert record["enqueued"] is True
        else:  # ended first: the confirmation is refused, the job never runs
            assert confirmed[job_id] is False and reaped[job_id] == "failed", record
            assert record["status"] == "failed" and record["enqueued"] is False
