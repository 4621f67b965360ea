"""A submission the gateway answered 503 never runs, also when Redis was lost between writing the
job's record and sending its message and the gateway could not end the record either: the record
stays ``queued`` but unconfirmed (``enqueued: false``), and the worker's reaper ends it ``failed``
instead of sending its message again. A real gateway talks to Redis through a proxy that cuts
Redis off at the command the test names (tests/redis_fault_proxy.py); the reaper is the real one on
the real store, with short periods. Nobody consumes the test's queue: its length is what was
sent."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fdl.job_records import JOB_KEY, NOT_CONFIRMED
from fdl.job_scripts import CONFIRM_SCRIPT
from fdl.jobs import JobStore
from harness.gateway import ADMIN_KEY, Gateway, bearer
from tests.redis_fault_proxy import HOLD_LIMIT_S, RedisFaultProxy, Rule
from training.reaper import reap_once
from training.settings import WorkerSettings

DATABASE = 11
SPEC = {"model": "mnist_logreg", "epochs": 1}
LPUSH = b"LPUSH"  # the broker's send of a task message (kombu's Redis transport)
RESEND_AFTER_S = 60.0
CONFIRM = hashlib.sha1(CONFIRM_SCRIPT.encode()).hexdigest().encode()  # EVALSHA <sha> of it


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    """This module's database, emptied, as the worker's reaper sees it (no proxy)."""
    client = redis.Redis.from_url(
        f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}", decode_responses=True
    )
    client.flushdb()
    yield JobStore(client)
    client.close()


Through = Callable[..., AbstractContextManager[tuple[Gateway, Rule]]]


@pytest.fixture
def through(
    store: JobStore, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> Through:
    """``with through(marker, hold=False) as (gateway, rule)``: a gateway whose Redis (store and
    broker) is behind a proxy that cuts Redis off at the first request with ``marker`` (or holds
    it, until ``rule.release()``), sending to a queue of its own."""
    kwargs = store.redis.connection_pool.connection_kwargs

    @contextmanager
    def running(
        marker: bytes, hold: bool = False, timeout_s: float | None = None
    ) -> Iterator[tuple[Gateway, Rule]]:
        rule = Rule(marker, "hold_request" if hold else "cut", 1)
        with RedisFaultProxy((kwargs["host"], kwargs["port"]), rule) as proxy:
            queue = f"unconfirmed-{uuid.uuid4().hex[:8]}"
            settings = {"FDL_TRAINING_QUEUE": queue}
            if hold:  # a held call must not time out (2 s) while a loaded machine runs the test
                settings["FDL_JOB_STORE_TIMEOUT_S"] = str(timeout_s or HOLD_LIMIT_S)
            with lone_gateway(queue, proxy.url(DATABASE), **settings) as gateway:
                yield gateway, rule

    return running


class Sent(list[tuple[str, str]]):
    """What the reaper sent: (job id, queue)."""

    def __call__(self, job_id: str, queue: str, _max_duration_s: float | None = None) -> None:
        self.append((job_id, queue))


def reaper(tmp_path: Path, gateway: Gateway) -> WorkerSettings:
    """A worker of the gateway's queue."""
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        training_queue=gateway.env["FDL_TRAINING_QUEUE"],
        resend_queued_after_s=RESEND_AFTER_S,
    )


def overdue(store: JobStore, job_id: str) -> None:
    """Make the job's message due to be sent again: created a resend period ago."""
    store.redis.hset(JOB_KEY.format(job_id), "created_at", json.dumps(time.time() - RESEND_AFTER_S))


def submit(gateway: Gateway) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/jobs", json=SPEC, headers=bearer(ADMIN_KEY), timeout=60)


def only_job(store: JobStore) -> dict[str, Any]:
    records, total = store.list()
    assert total == 1, records
    return records[0]


def messages(store: JobStore, gateway: Gateway) -> int:
    """Task messages waiting in the gateway's queue (a list named after it)."""
    return int(store.redis.llen(gateway.env["FDL_TRAINING_QUEUE"]))


def statuses(store: JobStore, job_id: str) -> list[str]:
    return [e["data"]["status"] for _, e in store.read_events(job_id) if e["type"] == "status"]


def test_a_refused_submission_whose_record_could_not_be_ended_never_runs(
    store: JobStore, through: Through, tmp_path: Path
) -> None:
    with through(LPUSH) as (gateway, cut):
        response = submit(gateway)
        assert cut.came.is_set()  # Redis went away at the message, not before
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "job_store_unavailable"
        log = gateway.process.log_path.read_text(errors="replace")
    # The record was written, its message never sent, and the `failed` write did not get through.
    job = only_job(store)
    assert job["status"] == "queued" and job["enqueued"] is False, job
    assert messages(store, gateway) == 0
    assert f"job {job['id']} could not be queued and its record could not be ended" in log

    # Its resend period over, the reaper ends it instead of sending it: a client that retried
    # after its 503 gets one job, not two.
    sent = Sent()
    settings = reaper(tmp_path, gateway)
    overdue(store, job["id"])
    assert reap_once(store, settings, sent) == [(job["id"], "failed")]
    assert sent == [] and messages(store, gateway) == 0
    ended = store.get(job["id"])
    assert ended is not None and ended["status"] == "failed" and ended["error"] == NOT_CONFIRMED
    assert ended["finished_at"] is not None
    assert statuses(store, job["id"]) == ["queued", "failed"]
    assert reap_once(store, settings, sent) == [] and sent == []


def test_a_confirmation_and_the_reaper_never_both_apply(
    store: JobStore, through: Through, tmp_path: Path
) -> None:
    sent = Sent()
    with through(CONFIRM, hold=True) as (gateway, held), ThreadPoolExecutor(1) as pool:
        # The reaper first: the message is sent, its confirmation held on its way to Redis.
        pending = pool.submit(submit, gateway)
        assert held.came.wait(30), pending.result() if pending.done() else "no confirmation"
        job = only_job(store)
        assert job["enqueued"] is False and messages(store, gateway) == 1
        overdue(store, job["id"])
        assert reap_once(store, reaper(tmp_path, gateway), sent) == [(job["id"], "failed")]
        held.release()
        response = pending.result(timeout=30)
        # The confirmation came too late: the client is told so, and the message in the queue
        # finds the job ended (a worker's claim skips it).
        assert response.status_code == 503, response.text
        assert "could not be queued in time" in response.json()["error"]["message"]
        ended = store.get(job["id"])
        assert ended is not None and ended["status"] == "failed", ended
        assert ended["error"] == NOT_CONFIRMED and ended["enqueued"] is False
        assert not store.mark_running(job["id"], "some-worker:1")
        assert statuses(store, job["id"]) == ["queued", "failed"]

        # The confirmation first (nothing held now): accepted, and a lost message of the
        # confirmed job is sent again, as before.
        accepted = submit(gateway)
        assert accepted.status_code == 202, accepted.text
        second = store.get(accepted.json()["id"])
        assert second is not None and second["enqueued"] is True
        store.redis.delete(gateway.env["FDL_TRAINING_QUEUE"])  # the broker lost both messages
        overdue(store, second["id"])
        assert reap_once(store, reaper(tmp_path, gateway), sent) == [(second["id"], "resent")]
        assert sent == [(second["id"], gateway.env["FDL_TRAINING_QUEUE"])]
        record = store.get(second["id"])
        assert record is not None and record["status"] == "queued" and record["resends"] == 1


def test_a_sent_message_whose_confirmation_was_lost_is_accepted(
    store: JobStore, through: Through
) -> None:
    with through(CONFIRM) as (gateway, cut):
        response = submit(gateway)
        assert cut.came.is_set()
        log = gateway.process.log_path.read_text(errors="replace")
    # The message is in the queue and a worker's claim takes any queued job: 202.
    assert response.status_code == 202, response.text
    job = only_job(store)
    assert job["id"] == response.json()["id"]
    assert job["status"] == "queued" and job["enqueued"] is False
    assert messages(store, gateway) == 1
    assert f"job {job['id']} was queued but its record could not confirm it" in log
    assert store.mark_running(job["id"], "some-worker:1")


def test_a_send_to_a_hung_redis_is_answered_in_bounded_time(
    store: JobStore, through: Through
) -> None:
    """The broker's send gets no answer (Redis hung at that command): the submission is answered
    after the gateway's Redis timeout, not after the hang, and its record agrees with the answer.
    Celery retries a failed send on a new connection, which is not held: 202 then, else 503."""
    with through(LPUSH, hold=True, timeout_s=1.0) as (gateway, held):
        started = time.monotonic()
        try:
            response = submit_within(gateway, 20.0)
        finally:
            held.release()
        took = time.monotonic() - started
    assert took < 15.0, took  # before: as long as the hang (here HOLD_LIMIT_S)
    assert held.came.is_set()
    job = only_job(store)
    if response.status_code == 202:
        assert job["status"] == "queued" and job["enqueued"] is True, job
    else:
        assert response.status_code == 503, response.text
        assert job["status"] == "failed", job


def submit_within(gateway: Gateway, timeout_s: float) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/jobs", json=SPEC, headers=bearer(ADMIN_KEY), timeout=timeout_s
    )
