"""Jobs API: submit (queued in Celery's Redis queue), list, get, cancel, follow with SSE.

Job records are made with the real JobStore on the real Redis; no worker runs here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from fdl.job_records import JOB_KEY
from fdl.jobs import JobStatus, JobStore
from fdl.queue import MAX_DURATION_HEADER
from harness.gateway import Gateway
from harness.procs import wait_for
from tests.api.test_head import head_then_get, header, split_headers


@pytest.fixture(scope="module")
def store(redis_url: str) -> JobStore:
    return JobStore.from_url(redis_url)


def get(gateway: Gateway, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{gateway.url}{path}", headers=gateway.admin(), timeout=10, **kwargs)


def test_submit_queues_a_celery_message(gateway: Gateway, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    before = client.llen("training")
    spec = {"model": "mnist_mlp", "epochs": 2, "optimizer": {"name": "sgd"}}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=10)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["spec"]["epochs"] == 2
    assert job["spec"]["publish_as"] == "mnist_mlp"  # defaults filled in
    assert client.llen("training") == before + 1
    message = json.loads(client.lindex("training", 0))
    assert message["headers"]["id"] == job["id"]
    assert get(gateway, f"/v1/jobs/{job['id']}").json()["status"] == "queued"


@pytest.mark.parametrize("limit", [60, None])
def test_submit_sends_the_specs_time_limit_with_the_message(
    gateway: Gateway, redis_url: str, limit: int | None
) -> None:
    """The worker bounds the hard time limit of the run by it (tests/training/
    test_spec_hard_limit.py); a spec without one sends none."""
    client = redis.Redis.from_url(redis_url)
    spec = {"model": "mnist_mlp"} | ({"max_duration_s": limit} if limit else {})
    response = httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=10)
    assert response.status_code == 202, response.text
    message = client.lindex("training", 0)
    assert isinstance(message, bytes)
    headers = json.loads(message)["headers"]
    assert headers["id"] == response.json()["id"]
    assert headers.get(MAX_DURATION_HEADER) == limit
    assert headers.get("timelimit") in (None, [None, None])  # Celery's own: the worker's limits


def test_a_full_queue_refuses_submissions_with_429(
    redis_url: str, more_gateways: Callable[..., Gateway]
) -> None:
    """FDL_MAX_QUEUED_JOBS bounds what waits in the broker: a client looping over submissions
    cannot queue weeks of training. Nobody consumes this gateway's queue."""
    queue = f"capped-{uuid.uuid4().hex[:8]}"
    own_db = redis_url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(own_db).flushdb()
    capped = more_gateways(
        "gateway-capped",
        redis_url=own_db,
        FDL_MAX_QUEUED_JOBS="2",
        FDL_TRAINING_QUEUE=queue,
    )
    spec = {"model": "mnist_mlp"}

    def submit() -> httpx.Response:
        url = f"{capped.url}/v1/jobs"
        return httpx.post(url, json=spec, headers=capped.admin(), timeout=10)

    assert [submit().status_code for _ in range(2)] == [202, 202]
    refused = submit()
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"] == "60"
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and "2 jobs already wait" in error["message"]
    listed = httpx.get(f"{capped.url}/v1/jobs", headers=capped.admin(), timeout=10).json()
    assert listed["total"] == 2  # the refused one left no record


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"model": "mnist_mlp", "epochs": 0}, "epochs"),
        ({"model": "resnet"}, "model"),
        (
            {"model": "mnist_mlp", "optimizer": {"name": "adam", "learning_rate": -1}},
            "learning_rate",
        ),
        ({"model": "mnist_mlp", "bogus": 1}, "bogus"),
        ({"model": "mnist_mlp", "publish_as": "../etc"}, "publish_as"),
        ({}, "model"),
        # Checks across fields name the field that does not fit the others.
        ({"model": "mnist_cnn", "augment": True}, "augment"),
        ({"model": "mnist_cnn", "dataset": "cifar10"}, "dataset"),
        ({"model": "mnist_mlp", "validation_split": 0, "early_stopping": {}}, "early_stopping"),
    ],
)
def test_bad_specs_name_the_field(gateway: Gateway, spec: dict, field: str) -> None:
    response = httpx.post(f"{gateway.url}/v1/jobs", json=spec, headers=gateway.admin(), timeout=10)
    assert response.status_code == 422
    error = response.json()["error"]
    assert field in error["message"]
    fields = [d["field"] for d in error["details"]]
    assert any(f == field or f.endswith(f".{field}") for f in fields), fields


def test_list_paginates_and_filters(gateway: Gateway, store: JobStore) -> None:
    ids = [store.create({"model": "mnist_logreg"})["id"] for _ in range(5)]
    store.mark_running(ids[0], "worker-1")
    store.finish(ids[1], JobStatus.FAILED, error="boom")
    page = get(gateway, "/v1/jobs", params={"limit": 2, "offset": 0}).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
    assert page["total"] >= 5 and page["limit"] == 2
    second = get(gateway, "/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert [j["id"] for j in second["jobs"]] == ids[::-1][2:4]

    # A listing by status reads ids from a snapshot up to 2 s old (docs/gateway.md): another
    # test's listing just before may have left one without these jobs.
    def listed(status: str, job_id: str) -> dict | None:
        page = get(gateway, "/v1/jobs", params={"status": status}).json()
        return page if job_id in [j["id"] for j in page["jobs"]] else None

    failed = wait_for(lambda: listed("failed", ids[1]), 10, "the failed job listed")
    assert all(j["status"] == "failed" for j in failed["jobs"])
    wait_for(lambda: listed("running", ids[0]), 10, "the running job listed")
    for params in ({"status": "nope"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
        assert get(gateway, "/v1/jobs", params=params).status_code == 422


def test_get_unknown_and_malformed_ids(gateway: Gateway) -> None:
    missing = get(gateway, "/v1/jobs/0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "job_not_found"
    assert get(gateway, "/v1/jobs/bad.id!").status_code == 422


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/jobs", 200),
        ("/v1/jobs?status=queued&limit=2", 200),
        ("/v1/jobs/{job_id}", 200),
        ("/v1/jobs/0123456789abcdef", 404),
        ("/v1/jobs/bad.id!", 422),
        ("/v1/jobs?limit=0", 422),
    ],
)
@pytest.mark.parametrize("keyed", [True, False])
def test_head_on_the_job_routes_answers_as_get_without_a_body(
    gateway: Gateway, store: JobStore, path: str, status: int, keyed: bool
) -> None:
    """The GET's status and headers, and on the wire no body (``tests/api/test_head.py``)."""
    path = path.format(job_id=store.create({"model": "mnist_logreg"})["id"])
    headers = gateway.admin() if keyed else {}
    status = status if keyed else 401
    head = httpx.head(f"{gateway.url}{path}", headers=headers, timeout=10)
    got = httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10)
    assert head.status_code == got.status_code == status, head.headers
    for name in ("content-type", "content-length", "www-authenticate"):
        assert head.headers.get(name) == got.headers.get(name), name
    raw_head, after = head_then_get(gateway.url, path, headers)
    assert raw_head.startswith(f"HTTP/1.1 {status} ".encode()), raw_head
    assert int(header(raw_head, "content-length") or 0) > 0, raw_head  # announced, not sent
    assert after.startswith(f"HTTP/1.1 {status} ".encode()), after[:200]
    raw_get, body = split_headers(after)
    assert len(body) == int(header(raw_get, "content-length") or -1), raw_get


def test_the_event_stream_does_not_answer_head(gateway: Gateway, store: JobStore) -> None:
    job_id = store.create({"model": "mnist_logreg"})["id"]
    url = f"{gateway.url}/v1/jobs/{job_id}/events"
    assert httpx.head(url, headers=gateway.admin(), timeout=10).status_code == 405


def test_cancel_queued_and_running(gateway: Gateway, store: JobStore) -> None:
    queued = store.create({"model": "mnist_logreg"})["id"]
    response = httpx.delete(f"{gateway.url}/v1/jobs/{queued}", headers=gateway.admin())
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    running = store.create({"model": "mnist_logreg"})["id"]
    store.mark_running(running, "worker-1")
    response = httpx.delete(f"{gateway.url}/v1/jobs/{running}", headers=gateway.admin())
    assert response.json()["status"] == "running"  # cooperative: the worker stops it
    assert store.cancel_requested(running)
    missing = httpx.delete(f"{gateway.url}/v1/jobs/feedface", headers=gateway.admin())
    assert missing.status_code == 404


def iter_sse(response: httpx.Response) -> Iterator[dict]:
    """SSE events as they arrive (comments and keep-alive pings skipped)."""
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in current:
                yield current
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key] = value.strip()
    if "event" in current:
        yield current


def read_sse(response: httpx.Response) -> list[dict]:
    return list(iter_sse(response))


def test_events_of_a_finished_job_replay_and_end(gateway: Gateway, store: JobStore) -> None:
    job = store.create({"model": "mnist_logreg"})["id"]
    store.mark_running(job, "worker-1")
    store.update_progress(job, {"epoch": 1, "epochs": 2})
    store.update_progress(job, {"epoch": 2, "epochs": 2})
    store.finish(job, JobStatus.SUCCEEDED, result={"version": 1})
    with httpx.stream(
        "GET", f"{gateway.url}/v1/jobs/{job}/events", headers=gateway.admin(), timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    kinds = [(e["event"], json.loads(e["data"]).get("status")) for e in events]
    assert kinds == [
        ("status", "queued"),
        ("status", "running"),
        ("progress", None),
        ("progress", None),
        ("status", "succeeded"),
    ]
    # Resume after the second event: only what followed.
    headers = {**gateway.admin(), "Last-Event-ID": events[1]["id"]}
    with httpx.stream(
        "GET", f"{gateway.url}/v1/jobs/{job}/events", headers=headers, timeout=10
    ) as response:
        resumed = read_sse(response)
    assert [e["id"] for e in resumed] == [e["id"] for e in events[2:]]


def test_events_stream_live_until_the_end(gateway: Gateway, store: JobStore) -> None:
    job = store.create({"model": "mnist_logreg"})["id"]
    received: list[dict] = []
    done = threading.Event()

    def follow() -> None:
        with httpx.stream(
            "GET", f"{gateway.url}/v1/jobs/{job}/events", headers=gateway.admin(), timeout=30
        ) as response:
            for event in iter_sse(response):
                received.append(event)
        done.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    wait_for(lambda: len(received) >= 1, 10, "the first event")
    store.mark_running(job, "worker-1")
    store.update_progress(job, {"epoch": 1, "epochs": 1, "accuracy": 0.9})
    wait_for(lambda: len(received) >= 3, 10, "live progress")
    assert not done.is_set(), "the stream ended before the job did"
    start = time.monotonic()
    store.finish(job, JobStatus.FAILED, error="out of memory")
    wait_for(done.is_set, 10, "the stream to end after the terminal status")
    assert time.monotonic() - start < 10
    last = json.loads(received[-1]["data"])
    assert last == {"status": "failed", "result": None, "error": "out of memory"}
    assert json.loads(received[2]["data"])["accuracy"] == 0.9


def test_events_errors(gateway: Gateway, store: JobStore) -> None:
    assert get(gateway, "/v1/jobs/feedface/events").status_code == 404
    job = store.create({"model": "mnist_logreg"})["id"]
    # Not an id, or halves beyond Redis's 64 bits (which XREAD would refuse).
    for bad in ("not-an-id", "99999999999999999999-0", "1-18446744073709551616"):
        headers = {**gateway.admin(), "Last-Event-ID": bad}
        response = httpx.get(f"{gateway.url}/v1/jobs/{job}/events", headers=headers, timeout=10)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["code"] == "invalid_last_event_id"
    # Sent twice, a valid id then a bad one: refused, not read from the first alone.
    headers = [*gateway.admin().items(), ("Last-Event-ID", "1-0"), ("Last-Event-ID", "bad")]
    url = f"{gateway.url}/v1/jobs/{job}/events"
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:  # a stream, if taken
        assert response.status_code == 422, response.status_code
        message = json.loads(response.read())["error"]["message"]
    assert message == "Last-Event-ID was sent 2 times; send it once"
    assert httpx.get(f"{gateway.url}/v1/jobs/{job}/events", timeout=10).status_code == 401


def test_what_a_pruned_jobs_late_progress_leaves_is_not_a_job(
    gateway: Gateway, store: JobStore
) -> None:
    """A progress report (or heartbeat) of a worker older than SET_FIELDS_SCRIPT, landing after
    the reaper pruned its job, set fields on the deleted key: a record without id or status,
    which stays in a deployed Redis. Reading or cancelling it answered 500 (the response model
    needs an id); it is 404 like any unknown job. (Today's workers write nothing then.)"""
    job = uuid.uuid4().hex
    progress = json.dumps({"epoch": 3, "epochs": 5})
    store.redis.hset(JOB_KEY.format(job), mapping={"progress": progress, "heartbeat_at": "1.0"})
    assert store.get(job) is not None and store.get(job)["status"] is None  # type: ignore[index]
    for response in (
        get(gateway, f"/v1/jobs/{job}"),
        httpx.delete(f"{gateway.url}/v1/jobs/{job}", headers=gateway.admin(), timeout=10),
        get(gateway, f"/v1/jobs/{job}/events"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "job_not_found"
