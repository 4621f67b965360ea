"""POST /v1/jobs with an ``Idempotency-Key`` at FDL_MAX_QUEUED_JOBS, when a submission under the
key was left half done: a replay never waits for the queue's submission lock, and an abandoned
job does not count toward the cap. A real gateway on a real Redis; nobody consumes its queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from api.submit_lock import SUBMIT_LOCK_KEY
from fdl.job_records import JOB_KEY
from fdl.jobs import JobStore
from harness.gateway import ADMIN_KEY, Gateway, bearer

DATABASE = 15
SPEC = {"model": "mnist_mlp", "epochs": 2}
REPLAYED = "Idempotent-Replayed"
CAP = 5  # the gateway's FDL_MAX_QUEUED_JOBS


def submit(gateway: Gateway, key: str) -> httpx.Response:
    headers = {**bearer(ADMIN_KEY), "Idempotency-Key": key}
    return httpx.post(f"{gateway.url}/v1/jobs", json=SPEC, headers=headers, timeout=60)


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def own_db(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"


@pytest.fixture(scope="module")
def queue() -> str:
    return f"idempotent-capped-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def capped(own_db: str, queue: str, more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways(
        "gateway-keyed-capped",
        redis_url=own_db,
        FDL_MAX_QUEUED_JOBS=str(CAP),
        FDL_TRAINING_QUEUE=queue,
    )


@pytest.fixture
def store(own_db: str) -> Iterator[JobStore]:
    """This module's database, emptied before each test (the submission lock included)."""
    client = redis.Redis.from_url(own_db, decode_responses=True)
    client.flushdb()
    yield JobStore(client)
    client.close()


def test_a_replay_at_the_cap_does_not_wait_for_the_submission_lock(
    store: JobStore, queue: str, capped: Gateway
) -> None:
    """A gateway that died holding the queue's submission lock (it expires after 30 s): a replay
    is answered at once (before: it waited 5 s for the lock, then 503 job_store_busy); a new
    submission still waits for it."""
    key = new_key()
    first = submit(capped, key)
    assert first.status_code == 202, first.text
    store.redis.set(SUBMIT_LOCK_KEY.format(queue), "a dead gateway's token", ex=60)
    started = time.monotonic()
    replay = submit(capped, key)
    assert replay.status_code == 202 and replay.headers[REPLAYED] == "true", replay.text
    assert replay.json()["id"] == first.json()["id"]
    assert time.monotonic() - started < 3
    busy = submit(capped, new_key())
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "job_store_busy"


def test_an_abandoned_job_does_not_count_toward_the_cap(
    store: JobStore, capped: Gateway, queue: str
) -> None:
    """FDL_MAX_QUEUED_JOBS jobs wait, one of them abandoned by its submission under a key: a
    retry under the key replaces it (before: 429 queue_full, the abandoned job counted)."""
    key = new_key()
    first = submit(capped, key)
    assert first.status_code == 202, first.text
    abandoned = first.json()["id"]
    # As a gateway that stopped before it confirmed the message leaves the job, long ago.
    store.redis.hset(JOB_KEY.format(abandoned), "enqueued", "false")
    created = store.now() - 3600
    store.redis.hset(JOB_KEY.format(abandoned), "created_at", json.dumps(created))
    for _ in range(CAP - 1):
        assert submit(capped, new_key()).status_code == 202
    full = submit(capped, new_key())
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full", full.text
    retry = submit(capped, key)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers and retry.json()["id"] != abandoned
    ended = store.get(abandoned)
    assert ended is not None and ended["status"] == "failed", ended
    assert store.waiting(queue) == CAP
