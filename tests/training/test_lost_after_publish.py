"""A worker SIGKILLed after it renamed its version in but before it recorded the job as
succeeded: the job ends ``succeeded`` with that version, even when its cancellation was requested
meanwhile or that run was its last attempt (before, the reaper ended it ``cancelled`` or
``failed`` while its version was served)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from fdl.repository_reads import list_versions
from harness.procs import wait_for
from harness.redis import redis_running
from harness.worker import MNIST_TINY, Worker, start_worker, worker_running

FAST_REAPER = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "3",
    "FDL_REAPER_INTERVAL_S": "1",
}


def kill_between_publish_and_finish(worker: Worker, job_id: str, client: redis.Redis) -> None:
    """Hold the worker's writes to Redis once training reported its last epoch (it only reads
    Redis until it records the job's end), wait for its version to be renamed in, SIGKILL it
    while it waits to record the end, then let writes through again."""
    after = "0-0"

    def last_epoch_reported() -> bool:
        nonlocal after
        for entry_id, event in worker.store.read_events(job_id, after, block_ms=500):
            after = entry_id
            data = event["data"]
            # The end-of-epoch report (mid-epoch ones have a step).
            if event["type"] == "progress" and data.get("epoch") == 1 and "step" not in data:
                return True
        return False

    wait_for(last_epoch_reported, 120, "the last epoch", 0.0, worker.process.ensure_alive)
    client.execute_command("CLIENT", "PAUSE", "120000", "WRITE")
    try:
        model_path = worker.model_dir / "late"
        wait_for(lambda: list_versions(model_path), 120, "the version renamed in", 0.05)
        assert worker.store.get(job_id)["status"] == "running"
        worker.process.signal(signal.SIGKILL)
        worker.process.popen.wait(10)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


@pytest.mark.parametrize("case", ["cancel requested", "last attempt"])
def test_a_job_lost_after_publishing_ends_succeeded_with_its_version(
    case: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    env = {**FAST_REAPER, "FDL_MAX_ATTEMPTS": "1" if case == "last attempt" else "3"}
    # A Redis of its own: CLIENT PAUSE holds every client of the server.
    with redis_running(tmp_path / "redis", logs_dir, "redis-lost-after-publish") as url:
        client = redis.Redis.from_url(url)
        victim = start_worker("publish-victim", url, data_dir, tmp_path, logs_dir, env)
        try:
            job_id = victim.submit(model="mnist_logreg", publish_as="late", **MNIST_TINY)
            kill_between_publish_and_finish(victim, job_id, client)
        finally:
            victim.process.stop()
        if case == "cancel requested":
            assert victim.store.request_cancel(job_id)["status"] == "running"  # only flagged
        with worker_running("publish-rescuer", url, data_dir, tmp_path, logs_dir, env) as rescuer:
            record = rescuer.wait_done(job_id, timeout=60)
        client.close()
    assert record["status"] == "succeeded", record
    assert record["attempts"] == 1  # nothing was trained again
    assert record["result"]["published"] is True and record["result"]["version"] == 1
    assert "published by an earlier run" in record["result"]["reason"]
    assert list_versions(victim.model_dir / "late") == [1]
