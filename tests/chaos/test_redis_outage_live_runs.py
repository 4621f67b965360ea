"""Redis goes away for longer than FDL_STALE_AFTER_S while a real worker trains a job: no
heartbeat can be written meanwhile, and a reaper's pass may come right when Redis is back,
before the live run's next beat lands. Before, that pass took the live run for lost and ran the
job again (attempt 2, or failed past FDL_MAX_ATTEMPTS). Now a reaper judges a run lost only once
Redis has been reachable to it for a grace (two heartbeats and a margin): the live run goes on
and ends on its first attempt, and a run whose worker really died is still run again, a grace
later. A Redis paused by SIGSTOP (its replies only late, no call failing) is
tests/chaos/test_reaper_outage_grace.py's."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, Worker, start_worker
from training.redis_watch import outage_grace_s

HEARTBEAT_S, STALE_AFTER_S = 1.0, 6.0
QUICK_REAPER = {
    "FDL_REDIS_RETRY_S": "60",
    "FDL_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
    "FDL_STALE_AFTER_S": str(STALE_AFTER_S),
    "FDL_REAPER_INTERVAL_S": "0.5",
}
# Redis stays away this long: past FDL_STALE_AFTER_S, with room for the last beat before it.
OUTAGE_S = STALE_AFTER_S + 3
GRACE_S = outage_grace_s(HEARTBEAT_S)
# A worker that trains nothing (a queue of its own) and whose reaper judges right when Redis is
# back: its calls fail at once while Redis is away instead of waiting, and it passes every 0.1 s,
# while a live run's heartbeat thread waits out its retry's backoff (up to 2 s). Before the fix
# its first pass took the live run for lost.
EAGER_REAPER = {
    **QUICK_REAPER,
    "FDL_REDIS_RETRY_S": "0",
    "FDL_REAPER_INTERVAL_S": "0.1",
    "FDL_TRAINING_QUEUE": "fdl-tests-outage-idle",
}


def long_job(worker: Worker) -> str:
    """A job that trains well past the outage and the grace after it."""
    job_id = worker.submit(model="mnist_mlp", **{**MNIST_TINY, "epochs": 250})
    worker.wait_progress(job_id)
    return job_id


def lost_requeues(worker: Worker, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's events that sent it back to queued as a lost run: (stream id, event)."""
    events = worker.store.read_events(job_id, count=10_000)
    return [
        (i, e) for i, e in events if e["data"].get("status") == "queued" and "reason" in e["data"]
    ]


def assert_ran_once(worker: Worker, job_id: str, back: float) -> None:
    record = worker.wait_done(job_id, timeout=300)
    tail = worker.process.log_tail()
    assert record["status"] == "succeeded", (record, tail)
    assert record["attempts"] == 1, (lost_requeues(worker, job_id), tail)
    assert lost_requeues(worker, job_id) == []
    # The run went on past the grace after Redis came back: reapers' passes judged it then.
    assert float(record["finished_at"]) > back + GRACE_S + 1, (record, back)


def test_a_restart_longer_than_stale_after_requeues_no_live_run(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Redis stops (SIGTERM) for longer than FDL_STALE_AFTER_S and starts again: the live run
    ends on its first attempt; a run whose worker was SIGKILLed before the outage is requeued by
    the live worker's reaper, not before the grace after Redis came back."""
    url = restartable_redis.url
    with ExitStack() as stack:
        live = start_worker("outage-live", url, data_dir, tmp_path / "live", logs_dir, QUICK_REAPER)
        stack.callback(live.close)
        # The dead worker's job goes to a queue that no live worker consumes: it stays queued
        # once requeued, and the live worker keeps its own job.
        victim = start_worker(
            "outage-victim",
            url,
            data_dir,
            tmp_path / "victim",
            logs_dir,
            {**QUICK_REAPER, "FDL_TRAINING_QUEUE": "fdl-tests-outage-victim"},
        )
        stack.callback(victim.close)
        eager = start_worker(
            "outage-eager", url, data_dir, tmp_path / "eager", logs_dir, EAGER_REAPER
        )
        stack.callback(eager.close)
        live_job = long_job(live)
        dead_job = long_job(victim)
        # Killed just before the outage: its heartbeat is stale only by the outage's end.
        victim.process.signal(signal.SIGKILL)
        victim.process.popen.wait(10)
        restartable_redis.stop()
        time.sleep(OUTAGE_S)  # the outage itself, no readiness wait
        # Redis's clock is this machine's: no reaper reached Redis before this.
        back = time.time()
        restartable_redis.start()

        assert_ran_once(live, live_job, back)
        record = live.wait_status(dead_job, {"queued"}, timeout=60)
        assert record["attempts"] == 1
        ((entry, event),) = lost_requeues(live, dead_job)
        assert "lost: no heartbeat" in event["data"]["reason"]
        requeued_at = int(entry.split("-")[0]) / 1000  # the stream id: Redis's clock, in ms
        assert requeued_at >= back + GRACE_S, (requeued_at, back)
