"""`GET /v1/jobs/{id}/events` over a job that lasts longer than the XREAD block (and the Redis
client's socket timeout): the stream stays open, carries keep-alive comments while the job is
quiet, and ends cleanly after the final status. The job's record is written with the same
JobStore calls the worker makes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from fdl.jobs import JobStatus, JobStore
from harness.gateway import Gateway
from harness.procs import wait_for
from harness.sse import StreamReader

KEEP_ALIVES = 3  # one per 2.5 s block: together longer than the 5 s socket timeout


def test_stream_outlives_the_block_time_and_ends_with_the_job(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    # No model server: the stream does not need one.
    with lone_gateway("gateway-stream", redis_url) as gateway:
        store = JobStore.from_url(redis_url)
        try:
            job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
            reader = StreamReader(f"{gateway.url}/v1/jobs/{job_id}/events", gateway.admin())
            opened = time.monotonic()
            reader.start()
            assert store.mark_running(job_id, "test-worker")
            wait_for(
                lambda: reader.keep_alives() >= KEEP_ALIVES,
                40,
                "keep-alive comments on a quiet job",
                interval=0.2,
                check=reader.ensure_open,
            )
            quiet_s = time.monotonic() - opened
            store.update_progress(job_id, {"epoch": 1, "epochs": 1, "loss": 0.5})
            store.finish(job_id, JobStatus.SUCCEEDED, result={"published": False})
            reader.join(15)
            assert not reader.is_alive(), "the stream did not end with the job"
        finally:
            store.redis.close()
    assert reader.status_code == 200
    assert reader.error is None, reader.error
    assert quiet_s > 5, quiet_s
    data = [line for line in reader.lines if line.startswith("event:")]
    assert data[0] == "event: status" and data[-1] == "event: status", data
    assert "event: progress" in data
    final = [line for line in reader.lines if line.startswith("data:")][-1]
    assert '"succeeded"' in final
    log = gateway.process.log_path.read_text(errors="replace")
    assert "TimeoutError" not in log and "unhandled error" not in log


def test_a_diverged_runs_nan_loss_is_sent_as_json_null(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    """The worker writes a diverged epoch's loss as NaN; the stream's data stays standard JSON
    (a browser's JSON.parse refuses the bare word NaN, and the UI lost the whole event)."""
    with lone_gateway("gateway-stream-nan", redis_url) as gateway:
        store = JobStore.from_url(redis_url)
        try:
            job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
            assert store.mark_running(job_id, "test-worker")
            progress = {"epoch": 1, "epochs": 1, "loss": float("nan"), "accuracy": float("inf")}
            store.update_progress(job_id, progress)
            store.finish(job_id, JobStatus.FAILED, error="the loss diverged")
            reader = StreamReader(f"{gateway.url}/v1/jobs/{job_id}/events", gateway.admin())
            reader.start()
            reader.join(15)
            assert not reader.is_alive(), "the stream did not end with the job"
        finally:
            store.redis.close()
    data = [line.removeprefix("data:").strip() for line in reader.lines if line.startswith("data:")]
    events = [json.loads(item, parse_constant=_refuse) for item in data]
    sent = next(event for event in events if isinstance(event, dict) and "loss" in event)
    assert sent["loss"] is None and sent["accuracy"] is None, sent


def _refuse(word: str) -> None:
    raise AssertionError(f"the stream sent {word}, which is not JSON")
