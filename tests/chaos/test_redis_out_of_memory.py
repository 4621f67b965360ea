"""Redis at its ``maxmemory`` (no eviction) refuses every write that could grow it ("OOM
command not allowed") for a few seconds while a real worker trains a job: the worker's job store
waits it out as it waits out a restart, so the job succeeds on its first attempt and publishes
one version. Before, the run's first progress write failed the job, the failure could not be
written either (the record stayed ``running``), and the worker's main process died acking the
message; the job waited for another worker's reaper and trained again from its first epoch.
And the gateway lists jobs meanwhile: a listing only reads, which such a Redis still answers
(before, its records were read in a transaction, which Redis refuses then)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import redis

from fdl.jobs import JobStore
from harness.gateway import Gateway
from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, worker_running

# What the worker logs when a job-record operation met the refusal (with the fix: a retry;
# without it: the task failing).
REFUSAL_SEEN = ("Retrying fdl.job", "raised unexpected")


@contextmanager
def out_of_memory(url: str) -> Iterator[None]:
    """The Redis at ``url`` over its ``maxmemory`` without eviction, as one that filled up is,
    until leaving."""
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # below what it uses: every write that could grow it fails
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def test_a_job_waits_out_a_redis_that_refuses_writes(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with worker_running(
        "redis-oom-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_REDIS_RETRY_S": "60"},
    ) as worker:
        job_id = worker.submit(model="mnist_mlp", publish_as="oom", **{**MNIST_TINY, "epochs": 20})
        worker.wait_progress(job_id)
        with out_of_memory(restartable_redis.url):
            wait_for(
                lambda: any(mark in worker.process.log_tail(20_000) for mark in REFUSAL_SEEN),
                60,
                "the worker to meet Redis's refusal",
                interval=0.2,
                check=worker.process.ensure_alive,
            )
        record = worker.wait_done(job_id, timeout=120)
        worker.process.ensure_alive()  # its main process acked the message and lives on
        log = worker.process.log_tail(200_000)
    assert record["status"] == "succeeded", (record, log)
    assert record["attempts"] == 1
    assert record["result"]["published"] is True and record["result"]["version"] == 1
    assert record["progress"]["epoch"] == 20
    assert sorted(p.name for p in (worker.model_dir / "oom").iterdir() if p.is_dir()) == ["1"]
    assert "OutOfMemoryError" in log  # what it waited out


def test_the_gateway_lists_jobs_while_redis_refuses_writes(
    restartable_redis: RestartableRedis,
    lone_gateway: Callable[..., AbstractContextManager[Gateway]],
) -> None:
    store = JobStore.from_url(restartable_redis.url)
    job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
    with (
        lone_gateway("gateway-redis-oom", restartable_redis.url) as gateway,
        httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as client,
        out_of_memory(restartable_redis.url),
    ):
        listing = client.get("/v1/jobs")
        assert listing.status_code == 200, listing.text
        assert [job["id"] for job in listing.json()["jobs"]] == [job_id]
        assert client.get("/v1/jobs?status=queued").status_code == 200
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        # A submission and a cancellation write: refused, with the store's retryable 503.
        for refused in (
            client.post("/v1/jobs", json={"model": "mnist_logreg", "epochs": 1}),
            client.delete(f"/v1/jobs/{job_id}"),
        ):
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "job_store_unavailable"


def test_a_redis_full_for_longer_than_the_retries_is_logged_as_full(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Past FDL_REDIS_RETRY_S the run stops and leaves the job to the reaper, and the log line
    says why in the operator's terms: the store was full (a disk to free, a maxmemory to raise),
    not unreachable (a network or a restart to look into)."""
    stopped = "the job store was full for over 2s"
    with worker_running(
        "redis-full-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_REDIS_RETRY_S": "2"},
    ) as worker:
        job_id = worker.submit(model="mnist_mlp", publish_as="full", **{**MNIST_TINY, "epochs": 20})
        worker.wait_progress(job_id)
        with out_of_memory(restartable_redis.url):
            wait_for(
                lambda: stopped in worker.process.log_tail(50_000),
                60,
                "the run to stop on the full job store",
                interval=0.2,
                check=worker.process.ensure_alive,
            )
        log = worker.process.log_tail(200_000)
    assert f"job {job_id} stopped: {stopped}" in log
    assert "the job store was unreachable" not in log
