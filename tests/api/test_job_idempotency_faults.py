"""POST /v1/jobs with an ``Idempotency-Key`` when Redis fails in the middle of a submission: a
reply lost on its way back, Redis gone from one command on (tests/redis_fault_proxy.py).
Whatever the client was told, its retries under the key never make a
second job run beside the first, and never wait on a submission that is over. Real gateways on
a real Redis: one direct, the others through a proxy, on the same database and queue; the
worker's claim (the claim script a worker runs on each message) and the reaper are the real
ones. Nobody consumes the queue: its length is what was sent."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.job_submission import NOT_CREATED, NOT_QUEUED
from fdl.job_records import JOB_KEY
from fdl.job_scripts import CONFIRM_SCRIPT, CREATE_ONCE_SCRIPT, END_NOT_QUEUED_SCRIPT
from fdl.jobs import JobStore
from harness.gateway import ADMIN_KEY, Gateway, bearer
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from training.reaper import reap_once
from training.settings import WorkerSettings

DATABASE = 2
SPEC = {"model": "mnist_mlp", "epochs": 2}
REPLAYED = "Idempotent-Replayed"
LPUSH = b"LPUSH"  # the broker's send of a task message (kombu's Redis transport)
RESEND_AFTER_S = 60.0


def sha(script: str) -> bytes:
    """What an EVALSHA of ``script`` carries."""
    return hashlib.sha1(script.encode()).hexdigest().encode()


CREATE_ONCE, CONFIRM = sha(CREATE_ONCE_SCRIPT), sha(CONFIRM_SCRIPT)
# What the gateway's end of a job that the broker refused carries, whichever script ends it.
END = json.dumps(NOT_QUEUED).encode()


def submit(gateway: Gateway, key: str | None, spec: dict[str, Any] = SPEC) -> httpx.Response:
    headers = bearer(ADMIN_KEY)
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=headers, timeout=60)


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def own_db(redis_url: str) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"


@pytest.fixture(scope="module")
def queue() -> str:
    return f"idempotent-faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def direct(own_db: str, queue: str, more_gateways: Callable[..., Gateway]) -> Gateway:
    """A gateway without FDL_MAX_QUEUED_JOBS on this module's database, Redis answering."""
    return more_gateways(
        "gateway-keyed-direct", redis_url=own_db, FDL_MAX_QUEUED_JOBS="0", FDL_TRAINING_QUEUE=queue
    )


@pytest.fixture
def store(own_db: str) -> Iterator[JobStore]:
    """This module's database, emptied before each test."""
    client = redis.Redis.from_url(own_db, decode_responses=True)
    client.flushdb()
    yield JobStore(client)
    client.close()


Through = Callable[[RedisFaultProxy], AbstractContextManager[Gateway]]


@pytest.fixture
def through(queue: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]) -> Through:
    """``with through(proxy) as gateway``: a gateway like ``direct`` whose Redis (store and
    broker) is behind ``proxy``."""
    settings = {"FDL_TRAINING_QUEUE": queue, "FDL_MAX_QUEUED_JOBS": "0"}
    return lambda proxy: lone_gateway("gateway-keyed-faulty", proxy.url(DATABASE), **settings)


def upstream(store: JobStore) -> tuple[str, int]:
    kwargs = store.redis.connection_pool.connection_kwargs
    return kwargs["host"], kwargs["port"]


def only_job(store: JobStore) -> dict[str, Any]:
    records, total = store.list()
    assert total == 1, records
    return records[0]


def statuses(store: JobStore, job_id: str) -> list[str]:
    return [e["data"]["status"] for _, e in store.read_events(job_id) if e["type"] == "status"]


def created_ago(store: JobStore, job_id: str, seconds: float) -> None:
    """Make the job's record as old as ``seconds``, by Redis's clock."""
    store.redis.hset(JOB_KEY.format(job_id), "created_at", json.dumps(store.now() - seconds))


def in_use(response: httpx.Response) -> int:
    """The Retry-After of a 409 idempotency_key_in_use."""
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "idempotency_key_in_use", response.text
    return int(response.headers["Retry-After"])


def test_a_lost_reply_of_the_create_is_tried_again(
    store: JobStore, direct: Gateway, through: Through, queue: str
) -> None:
    """The script that writes the record and the key ran, but its reply was lost: the gateway
    tries it again, finds its own job and sends it (before: 503, and each retry under the key
    409 until a worker's reaper ended the job, 10 minutes)."""
    store.redis.script_load(CREATE_ONCE_SCRIPT)  # its first EVALSHA runs it (no NOSCRIPT)
    key = new_key()
    lost = Rule(CREATE_ONCE, "lose_reply", 1)
    with RedisFaultProxy(upstream(store), lost) as proxy:
        with through(proxy) as gateway:
            first = submit(gateway, key)
        assert lost.fired == 1
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    job = only_job(store)
    assert job["id"] == first.json()["id"] and job["enqueued"] is True, job
    assert store.redis.llen(queue) == 1
    retry = submit(direct, key)
    assert retry.status_code == 202 and retry.headers[REPLAYED] == "true", retry.text
    assert retry.json()["id"] == job["id"]


def test_a_create_whose_replies_are_all_lost_lets_its_key_go(
    store: JobStore, direct: Gateway, through: Through, queue: str
) -> None:
    """The create script ran but its reply was lost, and so were those of its tries again, as
    when Redis answers later than FDL_JOB_STORE_TIMEOUT_S (longer than the create's 1 s of
    retries): 503, and the job it wrote, its message never sent, is ended and its key let go. A
    retry under the key submits anew at once (before: 409 until the job counted as abandoned,
    23 s)."""
    store.redis.script_load(CREATE_ONCE_SCRIPT)  # its first EVALSHA runs it (no NOSCRIPT)
    store.redis.script_load(END_NOT_QUEUED_SCRIPT)
    key = new_key()
    lost = Rule(CREATE_ONCE, "lose_reply")
    with RedisFaultProxy(upstream(store), lost) as proxy:
        with through(proxy) as gateway:
            first = submit(gateway, key)
        assert lost.fired >= 2, lost  # tried again
    assert first.status_code == 503, first.text
    job = only_job(store)
    assert job["status"] == "failed" and job["error"] == NOT_CREATED, job
    assert store.redis.llen(queue) == 0
    retry = submit(direct, key)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers and retry.json()["id"] != job["id"]
    assert store.redis.llen(queue) == 1


def test_a_refused_submission_keeps_its_key_while_its_job_may_run(
    store: JobStore, direct: Gateway, through: Through, queue: str
) -> None:
    """The broker's send reached the queue but its reply was lost (503), and so was the
    gateway's end of the job: its key is let go only with its job ended, in one step. A retry
    under the key is told to wait (before: the key was let go without the job ended, the retry
    made a second job, and a worker ran both); once a worker takes the job, it is replayed."""
    key = new_key()
    lost, dropped = Rule(LPUSH, "lose_reply"), Rule(END, "drop")
    with RedisFaultProxy(upstream(store), lost, dropped) as proxy:
        with through(proxy) as gateway:
            refused = submit(gateway, key)
        assert lost.fired >= 1 and dropped.fired == 1, (lost, dropped)
    assert refused.status_code == 503, refused.text
    job = only_job(store)
    assert job["status"] == "queued" and job["enqueued"] is False, job
    assert store.redis.llen(queue) >= 1  # its message is in the queue (Celery sent it again)

    retry = submit(direct, key)
    assert in_use(retry) >= 1
    assert store.list()[1] == 1
    assert store.mark_running(job["id"], "some-worker:1")  # a worker takes its message
    replayed = submit(direct, key)
    assert replayed.status_code == 202 and replayed.headers[REPLAYED] == "true", replayed.text
    assert replayed.json()["id"] == job["id"] and replayed.json()["status"] == "running"
    assert store.list()[1] == 1


@pytest.mark.parametrize(
    ("marker", "answered"),
    [(LPUSH, 503), (CONFIRM, 202)],
    ids=["refused-and-redis-gone", "sent-and-redis-gone"],
)
def test_a_retry_takes_over_the_key_of_an_abandoned_submission(
    marker: bytes,
    answered: int,
    store: JobStore,
    direct: Gateway,
    through: Through,
    queue: str,
) -> None:
    """Redis goes away at the broker's send (503: the job could not be ended) or at the
    confirmation that the message was sent (202, which the client did not get): the job stays
    queued unconfirmed. Retries under the key are told to wait, by Retry-After, until the job
    is older than a live submission can be; then the retry ends it as the reaper would (a
    message of it that a worker gets is skipped: its claim fails) and gets a new job (before:
    409 until a worker's reaper ended the job, 10 minutes, or for the key's day without one)."""
    key = new_key()
    cut = Rule(marker, "cut", 1)
    with RedisFaultProxy(upstream(store), cut) as proxy, through(proxy) as gateway:
        first = submit(gateway, key)
        assert cut.came.is_set()
    assert first.status_code == answered, first.text
    job = only_job(store)
    assert job["status"] == "queued" and job["enqueued"] is False, job
    sent = store.redis.llen(queue)
    assert sent == (1 if marker == CONFIRM else 0)

    created_ago(store, job["id"], 0)  # however long the gateway took to stop
    assert in_use(submit(direct, key)) == 1  # young: its submission may be about to answer
    created_ago(store, job["id"], 10)
    wait_s = in_use(submit(direct, key))
    assert wait_s > 1  # until it counts as abandoned
    created_ago(store, job["id"], 10 + wait_s - 2)
    assert in_use(submit(direct, key)) in (1, 2, 3)
    created_ago(store, job["id"], 10 + wait_s)
    retry = submit(direct, key)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers and retry.json()["id"] != job["id"]

    ended = store.get(job["id"])
    assert ended is not None and ended["status"] == "failed", ended
    assert ended["error"].startswith("the job was not run: its submission was not confirmed")
    assert ended["error"].endswith(f"submitted job {retry.json()['id']} instead"), ended["error"]
    assert ended["finished_at"] is not None
    assert store.confirm_sent(job["id"]) is False  # a late confirmation is answered 503
    assert statuses(store, job["id"]) == ["queued", "failed"]
    assert store.redis.llen(queue) == sent + 1
    assert not store.mark_running(job["id"], "some-worker:1")  # its message is skipped
    assert store.mark_running(retry.json()["id"], "some-worker:1")
    again = submit(direct, key)
    assert again.headers.get(REPLAYED) == "true" and again.json()["id"] == retry.json()["id"]


def test_a_key_whose_job_the_reaper_ended_unconfirmed_submits_anew(
    store: JobStore, direct: Gateway, through: Through, queue: str, tmp_path: Path
) -> None:
    """Redis went away at the broker's send: 503, the job stays queued unconfirmed, its key
    naming it. The reaper ends it at its resend time (never sent, never claimed): the key names
    no job any more, and a retry under it creates one."""
    key = new_key()
    cut = Rule(LPUSH, "cut", 1)
    with RedisFaultProxy(upstream(store), cut) as proxy, through(proxy) as gateway:
        assert submit(gateway, key).status_code == 503
    job = only_job(store)
    assert in_use(submit(direct, key)) >= 1  # its key names it
    created_ago(store, job["id"], RESEND_AFTER_S)  # its message is due to be sent again
    settings = WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        training_queue=queue,
        resend_queued_after_s=RESEND_AFTER_S,
    )
    assert reap_once(store, settings, lambda *_: None) == [(job["id"], "failed")]
    retry = submit(direct, key)
    assert retry.status_code == 202, retry.text
    assert REPLAYED not in retry.headers and retry.json()["id"] != job["id"]
    assert store.redis.llen(queue) == 1
