"""POST /v1/jobs with an ``Idempotency-Key``: a client that retries a submission whose answer it
lost gets the job its first try created, never a second job (api/idempotency.py,
fdl/job_idempotency.py). Real gateways on the real Redis: the shared one (FDL_MAX_QUEUED_JOBS
on: the capped path), one without the cap (the record and the key written by one Lua script,
nothing else in between) and one whose Redis is behind a proxy that holds the confirmation of
a message (a submission still under way). Nobody consumes their queues."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
import redis

from fdl.job_records import INDEX_KEY
from fdl.job_scripts import CONFIRM_SCRIPT
from fdl.jobs import JobStatus, JobStore
from harness.gateway import ADMIN_KEY, FILE_ADMIN_KEY, Gateway, bearer
from tests.redis_fault_proxy import HOLD_LIMIT_S, RedisFaultProxy, Rule

DATABASE = 6
SPEC = {"model": "mnist_mlp", "epochs": 2}
REPLAYED = "Idempotent-Replayed"
CONCURRENT = 8
CONFIRM = hashlib.sha1(CONFIRM_SCRIPT.encode()).hexdigest().encode()  # EVALSHA <sha> of it


def submit(
    gateway: Gateway,
    key: str | bytes | None,
    spec: dict[str, Any] = SPEC,
    admin_key: str = ADMIN_KEY,
    timeout: float = 30,
) -> httpx.Response:
    headers: dict[str, Any] = bearer(admin_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=headers, timeout=timeout)


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def own_db(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"


@pytest.fixture(scope="module")
def uncapped(own_db: str, more_gateways: Callable[..., Gateway]) -> Gateway:
    """A gateway without FDL_MAX_QUEUED_JOBS (no submission lock) over this module's database."""
    queue = f"idempotent-{uuid.uuid4().hex[:8]}"
    return more_gateways(
        "gateway-idempotent", redis_url=own_db, FDL_MAX_QUEUED_JOBS="0", FDL_TRAINING_QUEUE=queue
    )


@pytest.fixture
def client(own_db: str) -> Iterator[redis.Redis]:
    """This module's database, emptied before each test."""
    connection = redis.Redis.from_url(own_db, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


def test_a_retry_answers_the_first_submissions_job(gateway: Gateway, redis_url: str) -> None:
    """The retry sends the same spec written otherwise (another field order, a default spelled
    out): the validated spec is what counts. It is answered the job as it is now (cancelled
    meanwhile here), says it was replayed, and queues nothing."""
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    key = new_key()
    first = submit(gateway, key)
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    job = first.json()
    jobs, messages = db.zcard(INDEX_KEY), db.llen("training")

    again = submit(gateway, key, {"epochs": 2, "model": "mnist_mlp", "publish_as": "mnist_mlp"})
    assert again.status_code == 202, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json() == job

    cancelled = httpx.delete(f"{gateway.url}/v1/jobs/{job['id']}", headers=gateway.admin())
    assert cancelled.status_code == 200, cancelled.text
    later = submit(gateway, key)
    assert later.status_code == 202 and later.headers[REPLAYED] == "true", later.text
    assert later.json() == cancelled.json() and later.json()["status"] == "cancelled"
    assert db.zcard(INDEX_KEY) == jobs and db.llen("training") == messages

    other = submit(gateway, new_key())  # another key: another job
    assert other.status_code == 202 and other.json()["id"] != job["id"], other.text
    assert REPLAYED not in other.headers


def test_the_same_key_with_another_spec_is_refused(gateway: Gateway, redis_url: str) -> None:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    key = new_key()
    first = submit(gateway, key)
    assert first.status_code == 202, first.text
    jobs = db.zcard(INDEX_KEY)
    refused = submit(gateway, key, {**SPEC, "epochs": 3})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "idempotency_key_reused", error
    assert first.json()["id"] in error["message"] and "another job spec" in error["message"]
    assert db.zcard(INDEX_KEY) == jobs


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("", "is empty"),
        ("k" * 256, "is 256 characters long"),
        ("two words", "holds ' ' (U+0020) at character 4"),
        (b"caf\xc3\xa9", "holds 'é' (U+00E9, UTF-8 bytes C3 A9) at character 4"),
        ("tab\there", "holds '\\t' (U+0009) at character 4"),
    ],
)
def test_a_key_that_is_not_printable_ascii_is_refused(
    gateway: Gateway, redis_url: str, key: str | bytes, says: str
) -> None:
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    jobs = db.zcard(INDEX_KEY)
    refused = submit(gateway, key)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_idempotency_key", error
    assert error["message"].startswith(f"Idempotency-Key {says}: it must be 1 to 255"), error
    assert db.zcard(INDEX_KEY) == jobs


def test_a_key_sent_twice_is_refused_and_the_longest_and_shortest_keys_pass(
    gateway: Gateway,
) -> None:
    headers = [*bearer(ADMIN_KEY).items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    twice = httpx.post(f"{gateway.url}/v1/jobs", json=SPEC, headers=headers, timeout=30)
    assert twice.status_code == 422, twice.text
    assert twice.json()["error"]["message"].startswith("Idempotency-Key was sent 2 times")
    longest = "~!" + uuid.uuid4().hex + "x" * 221
    for key in (longest, uuid.uuid4().hex[:1]):
        assert len(key) in (1, 255)
        first, again = submit(gateway, key), submit(gateway, key)
        assert first.status_code == again.status_code == 202, (first.text, again.text)
        assert again.json()["id"] == first.json()["id"] and again.headers[REPLAYED] == "true"


def test_the_key_is_the_callers_own(gateway: Gateway) -> None:
    """Two API keys (two tenants) that send the same Idempotency-Key get a job each, and each
    its own on a retry."""
    key = new_key()
    mine = submit(gateway, key, admin_key=ADMIN_KEY)
    theirs = submit(gateway, key, admin_key=FILE_ADMIN_KEY)
    assert mine.status_code == theirs.status_code == 202, (mine.text, theirs.text)
    assert mine.json()["id"] != theirs.json()["id"] and REPLAYED not in theirs.headers
    assert submit(gateway, key, admin_key=FILE_ADMIN_KEY).json()["id"] == theirs.json()["id"]
    assert submit(gateway, key, admin_key=ADMIN_KEY).json()["id"] == mine.json()["id"]


def submit_at_once(gateway: Gateway, key: str, count: int) -> list[httpx.Response]:
    """``count`` submissions under one key, each from a thread of its own on a connection
    already open, released together by a barrier."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * count

    def send(n: int) -> None:
        try:
            with httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=60) as http:
                assert http.get("/healthz").status_code == 200  # the connection is open
                barrier.wait(30)
                responses[n] = http.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
        except BaseException as error:  # reported below, in the test's thread
            barrier.abort()
            responses[n] = error

    threads = [threading.Thread(target=send, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    failed = [r for r in responses if not isinstance(r, httpx.Response)]
    assert not failed, failed
    return [r for r in responses if isinstance(r, httpx.Response)]


@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "capped"])
def test_concurrent_submissions_under_one_key_create_one_job(
    capped: bool, gateway: Gateway, uncapped: Gateway, client: redis.Redis, redis_url: str
) -> None:
    """Each is answered the one job (202, replayed) or, while its first submission is still
    being queued, 409 idempotency_key_in_use: one record, one message."""
    target = gateway if capped else uncapped
    db = redis.Redis.from_url(redis_url, decode_responses=True) if capped else client
    queue = target.env.get("FDL_TRAINING_QUEUE", "training")
    jobs, messages = db.zcard(INDEX_KEY), db.llen(queue)
    key = new_key()
    responses = submit_at_once(target, key, CONCURRENT)
    accepted = [r for r in responses if r.status_code == 202]
    assert {r.json()["id"] for r in accepted} == {accepted[0].json()["id"]}, [
        r.text for r in responses
    ]
    assert Counter(r.headers.get(REPLAYED) for r in accepted)[None] == 1  # the one that made it
    for busy in (r for r in responses if r.status_code != 202):
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "idempotency_key_in_use"
        assert int(busy.headers["Retry-After"]) >= 1  # 1 while young: load may age it
    assert db.zcard(INDEX_KEY) == jobs + 1 and db.llen(queue) == messages + 1
    retry = submit(target, key)
    assert retry.status_code == 202 and retry.headers[REPLAYED] == "true", retry.text
    assert retry.json()["id"] == accepted[0].json()["id"]


def test_a_retry_after_the_broker_refused_submits_anew(
    uncapped: Gateway, client: redis.Redis
) -> None:
    """The broker refuses the message (its queue's key holds no list): the job ends failed, the
    client gets 503, and its retry under the same key is a new submission, not that job."""
    queue = uncapped.env["FDL_TRAINING_QUEUE"]
    client.set(queue, "not a list")
    key = new_key()
    refused = submit(uncapped, key)
    assert refused.status_code == 503, refused.text
    [failed] = JobStore(client).list()[0]
    assert failed["status"] == "failed" and "could not be queued" in failed["error"], failed
    assert not client.keys("fdl:idempotency:*")  # the key was let go
    client.delete(queue)
    retried = submit(uncapped, key)
    assert retried.status_code == 202, retried.text
    assert REPLAYED not in retried.headers and retried.json()["id"] != failed["id"]
    assert client.llen(queue) == 1
    again = submit(uncapped, key)
    assert again.headers.get(REPLAYED) == "true" and again.json()["id"] == retried.json()["id"]


def test_a_key_whose_job_was_pruned_submits_anew(uncapped: Gateway, client: redis.Redis) -> None:
    """The job ended and its record was removed (FDL_JOB_RETENTION_S) before the key's day was
    over: the key names no job any more."""
    store, key = JobStore(client), new_key()
    first = submit(uncapped, key)
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    assert store.finish(job_id, JobStatus.SUCCEEDED, result={"version": 1})
    replayed = submit(uncapped, key)  # ended, still kept: replayed
    assert replayed.status_code == 202 and replayed.headers[REPLAYED] == "true", replayed.text
    assert replayed.json()["id"] == job_id and replayed.json()["status"] == "succeeded"
    assert store.prune(store.now() + 1) == [job_id]
    again = submit(uncapped, key)
    assert again.status_code == 202, again.text
    assert REPLAYED not in again.headers and again.json()["id"] != job_id


def test_a_retry_while_the_first_is_being_queued_gets_409_even_at_the_cap(
    client: redis.Redis, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    """The first submission's confirmation is held on its way to Redis: a retry under its key
    is told to retry shortly (409, not a second job, nor 429 though its job fills the queue);
    with another spec, 422. Once the first is answered, the retry gets its job."""
    kwargs = client.connection_pool.connection_kwargs
    queue = f"held-{uuid.uuid4().hex[:8]}"
    settings = {
        "FDL_TRAINING_QUEUE": queue,
        "FDL_MAX_QUEUED_JOBS": "1",
        "FDL_JOB_STORE_TIMEOUT_S": str(HOLD_LIMIT_S),
    }
    key = new_key()
    confirm = Rule(CONFIRM, "hold_request", 1)
    with (
        RedisFaultProxy((kwargs["host"], kwargs["port"]), confirm) as proxy,
        lone_gateway(queue, proxy.url(DATABASE), **settings) as held,
        ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(submit, held, key, SPEC, ADMIN_KEY, 60)
        assert confirm.came.wait(30), pending.result() if pending.done() else "no confirmation"
        busy = submit(held, key)
        assert busy.status_code == 409, busy.text
        assert int(busy.headers["Retry-After"]) >= 1  # 1 while young: load may age it
        assert busy.json()["error"]["code"] == "idempotency_key_in_use"
        other = submit(held, key, {**SPEC, "epochs": 5})
        assert other.status_code == 422, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert submit(held, new_key()).status_code == 429  # the queue is full
        confirm.release()
        first = pending.result(timeout=60)
        assert first.status_code == 202 and REPLAYED not in first.headers, first.text
        retry = submit(held, key)
        assert retry.status_code == 202 and retry.headers[REPLAYED] == "true", retry.text
        assert retry.json()["id"] == first.json()["id"]
    assert client.zcard(INDEX_KEY) == 1 and client.llen(queue) == 1


def test_the_openapi_document_declares_the_header(gateway: Gateway) -> None:
    operation = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()["paths"]["/v1/jobs"]
    submit_op = operation["post"]
    [header] = [p for p in submit_op["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header" and not header["required"]
    schema = header["schema"]  # anyOf string or null; the bounds apply to the string
    assert schema["maxLength"] == 255 and schema["minLength"] == 1, header
    assert schema["pattern"] == "^[!-~]+$", header
    assert REPLAYED in submit_op["responses"]["202"]["headers"]
    assert {"409", "422"} <= set(submit_op["responses"])
