"""FDL_MAX_QUEUED_JOBS holds under concurrent submissions: across the threads of one gateway and
across gateway replicas sharing a Redis, the count of waiting jobs and the record's creation are
one step (a lock per queue, ``api/job_submission.py``). Real gateways on a Redis database of this
module's own; nobody consumes their queues."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
import redis

from api.errors import STORE_RETRY_AFTER_S
from api.submit_lock import SUBMIT_LOCK_KEY, SUBMIT_LOCK_WAIT_S
from fdl.job_records import INDEX_KEY
from fdl.jobs import JobStatus, JobStore
from harness.gateway import Gateway
from tests.redis_fault_proxy import RedisFaultProxy, Rule

DATABASE = 14
CAP = 2
SUBMISSIONS = 24
SPEC = {"model": "mnist_mlp"}
# Jobs that ended, kept as a deployment keeps them for FDL_JOB_RETENTION_S: each count of the
# waiting jobs reads them all, which gives concurrent submissions time to meet in it.
ENDED = 1000


@pytest.fixture(scope="module")
def own_db(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"


@pytest.fixture(scope="module")
def replicas(own_db: str, more_gateways: Callable[..., Gateway]) -> tuple[str, list[Gateway]]:
    """Two gateways over this module's database with one capped training queue."""
    queue = f"capped-{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(own_db).flushdb()
    settings = {"FDL_MAX_QUEUED_JOBS": str(CAP), "FDL_TRAINING_QUEUE": queue}
    started = [more_gateways(f"gateway-cap-{n}", redis_url=own_db, **settings) for n in (1, 2)]
    return queue, started


@pytest.fixture
def client(own_db: str) -> Iterator[redis.Redis]:
    """This module's database, emptied before each test."""
    connection = redis.Redis.from_url(own_db, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


def submit_at_once(gateways: list[Gateway], count: int) -> list[httpx.Response]:
    """``count`` submissions, spread over ``gateways``, each from a thread of its own on a
    connection already open, released together by a barrier."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * count

    def submit(n: int) -> None:
        gateway = gateways[n % len(gateways)]
        try:
            with httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as http:
                assert http.get("/healthz").status_code == 200  # the connection is open
                barrier.wait(30)
                responses[n] = http.post("/v1/jobs", json=SPEC)
        except BaseException as error:  # reported below, in the test's thread
            barrier.abort()
            responses[n] = error

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    failed = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not failed, failed
    return [r for r in responses if isinstance(r, httpx.Response)]


def test_concurrent_submissions_never_pass_the_cap(
    replicas: tuple[str, list[Gateway]], client: redis.Redis
) -> None:
    """Every submission sees an empty queue when it starts: without the lock, several of them
    counted fewer than the cap waiting and were all accepted."""
    queue, gateways = replicas
    store = JobStore(client)
    for _ in range(ENDED):
        job_id = store.create(SPEC, queue=queue)["id"]
        store.finish(job_id, JobStatus.SUCCEEDED, result={"version": 1})
    responses = submit_at_once(gateways, SUBMISSIONS)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: CAP, 429: SUBMISSIONS - CAP}, [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["error"]["code"] == "queue_full", refused.text
        assert refused.headers["Retry-After"] == "60"
    accepted = {r.json()["id"] for r in responses if r.status_code == 202}
    gateway = gateways[0]
    listed = httpx.get(f"{gateway.url}/v1/jobs", headers=gateway.admin(), timeout=10).json()
    assert listed["total"] == ENDED + CAP  # the refused ones left no record
    queued = httpx.get(
        f"{gateway.url}/v1/jobs", params={"status": "queued"}, headers=gateway.admin(), timeout=10
    ).json()
    assert queued["total"] == CAP and {j["id"] for j in queued["jobs"]} == accepted
    assert client.llen(queue) == CAP  # the broker holds the accepted jobs' messages only
    assert not client.keys(SUBMIT_LOCK_KEY.format("*"))  # every holder gave the lock back


def test_a_submission_that_cannot_get_the_lock_is_refused_with_503(
    replicas: tuple[str, list[Gateway]], client: redis.Redis
) -> None:
    """Another holder keeps the queue's lock (a submission whose count is slow, a replica that
    died holding it): after waiting its while, a submission gets the job store's retryable 503
    JSON, not a 500, and writes nothing; once the lock is free, submissions go through."""
    queue, (gateway, _) = replicas
    held = client.lock(SUBMIT_LOCK_KEY.format(queue), timeout=60)
    assert held.acquire(blocking=False)
    try:
        url = f"{gateway.url}/v1/jobs"
        refused = httpx.post(url, json=SPEC, headers=gateway.admin(), timeout=30)
    finally:
        held.release()
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == str(STORE_RETRY_AFTER_S)
    error = refused.json()["error"]
    assert error["code"] == "job_store_busy", error
    assert f"{SUBMIT_LOCK_WAIT_S:g}s" in error["message"]
    assert client.zcard(INDEX_KEY) == 0 and client.llen(queue) == 0
    accepted = httpx.post(url, json=SPEC, headers=gateway.admin(), timeout=30)
    assert accepted.status_code == 202, accepted.text


def test_a_lock_taken_without_an_answer_is_freed_by_the_next_submission(
    client: redis.Redis, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    """Redis takes the queue's lock for a submission but its replies are lost (every try of
    redis-py's): that submission answers 503 job_store_unavailable and the lock stays, held by
    nobody. The next submission through the same gateway frees it (its token was remembered)
    and is accepted at once, instead of waiting 5 s for 503 job_store_busy until it expires."""
    kwargs = client.connection_pool.connection_kwargs
    lock_key = SUBMIT_LOCK_KEY.format(queue := f"lost-{uuid.uuid4().hex[:8]}")
    unanswered = Rule(b"fdl:submit-lock", "lose_reply", 1000)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), unanswered) as proxy:
        settings = {"FDL_MAX_QUEUED_JOBS": str(CAP), "FDL_TRAINING_QUEUE": queue}
        with lone_gateway(queue, proxy.url(DATABASE), **settings) as gateway:
            url, headers = f"{gateway.url}/v1/jobs", gateway.admin()
            lost = httpx.post(url, json=SPEC, headers=headers, timeout=60)
            unanswered.times = unanswered.fired  # Redis answers again
            assert lost.status_code == 503, lost.text
            assert lost.json()["error"]["code"] == "job_store_unavailable", lost.text
            assert unanswered.fired >= 1 and client.exists(lock_key)  # Redis took the lock
            assert client.zcard(INDEX_KEY) == 0
            started = time.monotonic()
            accepted = httpx.post(url, json=SPEC, headers=headers, timeout=60)
            took = time.monotonic() - started
    assert accepted.status_code == 202, accepted.text
    assert took < SUBMIT_LOCK_WAIT_S / 2, took
    assert not client.exists(lock_key)
    assert client.zcard(INDEX_KEY) == 1 and client.llen(queue) == 1
