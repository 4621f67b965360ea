"""A worker SIGKILLed mid-job does not lose the job: another worker's reaper notices the stale
heartbeat, re-enqueues it, and it runs again to the end."""

from __future__ import annotations

import signal
from pathlib import Path

from harness.worker import MNIST_TINY, start_worker, worker_running

FAST_REAPER = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "3",
    "FDL_REAPER_INTERVAL_S": "1",
}


def test_sigkilled_worker_job_runs_again(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    # A database of its own, so that the session's worker neither sees nor reaps this job.
    url = redis_url.rsplit("/", 1)[0] + "/1"
    victim = start_worker("victim-worker", url, data_dir, tmp_path, logs_dir, FAST_REAPER)
    try:
        job_id = victim.submit(
            model="mnist_mlp", publish_as="survivor", **{**MNIST_TINY, "epochs": 12}
        )
        victim.wait_progress(job_id)
        victim.process.signal(signal.SIGKILL)
        victim.process.popen.wait(10)
        killed = victim.store.get(job_id)
        assert killed is not None and killed["status"] == "running"
        assert killed["progress"]["epoch"] < 12
    finally:
        victim.process.stop()

    with worker_running(
        "rescuer-worker", url, data_dir, tmp_path, logs_dir, FAST_REAPER
    ) as rescuer:
        record = rescuer.wait_done(job_id, timeout=150)
    assert record["status"] == "succeeded", (record, rescuer.process.log_tail())
    assert record["attempts"] == 2
    assert record["result"]["published"] is True and record["result"]["version"] == 1
    assert record["progress"]["epoch"] == 12
    events = [e for _, e in rescuer.store.read_events(job_id, count=10_000)]
    requeued = [e for e in events if e["data"].get("status") == "queued" and "reason" in e["data"]]
    assert len(requeued) == 1 and "lost: no heartbeat" in requeued[0]["data"]["reason"]
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
