"""Redis stops while a real worker trains a job and comes back on the same port: the worker
retries its job-record operations meanwhile, so the job still succeeds on its first attempt, its
final state is recorded, and exactly one version is published; past the retries, the reaper runs
it again. A Redis that comes back without its data (the job's record lost) stops the job, and
nothing recreates its record. And a job whose message never reached the broker still runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import redis

from fdl.job_records import EVENTS_KEY, JOB_KEY
from fdl.jobspec import JobSpec
from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, Worker, worker_running

# What the worker logs when a job-record operation found Redis gone (with the fix: a retry;
# without it: the task failing).
OUTAGE_SEEN = ("Retrying fdl.job", "raised unexpected")  # fdl.job_runs, fdl.job_reads…


def run_through_outage(
    worker: Worker, redis: RestartableRedis, publish_as: str, marks: tuple[str, ...], what: str
) -> dict[str, Any]:
    """A 20-epoch job; once it trains, Redis stops until the worker logs one of ``marks``, then
    starts again on its port. Returns the job's final record."""
    job_id = worker.submit(model="mnist_mlp", publish_as=publish_as, **{**MNIST_TINY, "epochs": 20})
    worker.wait_progress(job_id)
    redis.stop()
    wait_for(
        lambda: any(mark in worker.process.log_tail(20_000) for mark in marks),
        60,
        what,
        interval=0.2,
        check=worker.process.ensure_alive,
    )
    redis.start()
    return worker.wait_done(job_id, timeout=120)


def published(worker: Worker, model: str) -> list[str]:
    return sorted(p.name for p in (worker.model_dir / model).iterdir() if p.is_dir())


def test_job_survives_a_redis_restart(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with worker_running(
        "redis-outage-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_REDIS_RETRY_S": "60"},
    ) as worker:
        record = run_through_outage(
            worker, restartable_redis, "outage", OUTAGE_SEEN, "the worker to run into the outage"
        )
    assert record["status"] == "succeeded", (record, worker.process.log_tail())
    assert record["attempts"] == 1
    assert record["result"]["published"] is True and record["result"]["version"] == 1
    assert record["progress"]["epoch"] == 20
    assert published(worker, "outage") == ["1"]


# What the worker logs when a job-record operation kept failing past FDL_REDIS_RETRY_S.
LEFT_TO_REAPER = "left to the reaper"


def test_job_outlives_an_outage_longer_than_its_retries(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Redis stays away past the worker's retries: the attempt stops without recording a
    failure, and once Redis is back the reaper runs the job again to success."""
    quick_rescue = {
        "FDL_REDIS_RETRY_S": "2",
        "FDL_HEARTBEAT_INTERVAL_S": "1",
        "FDL_STALE_AFTER_S": "5",
        "FDL_REAPER_INTERVAL_S": "1",
    }
    with worker_running(
        "redis-long-outage-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        quick_rescue,
    ) as worker:
        record = run_through_outage(
            worker,
            restartable_redis,
            "long-outage",
            (LEFT_TO_REAPER,),
            "the attempt to stop once the retries ran out",
        )
    assert record["status"] == "succeeded", (record, worker.process.log_tail())
    assert record["attempts"] == 2
    assert published(worker, "long-outage") == ["1"]


def test_a_job_whose_message_was_lost_still_runs(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """The record is written but the message never reaches the broker (the gateway stopped in
    between): a worker's reaper sends it again, and the job runs once."""
    with worker_running(
        "lost-message-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_RESEND_QUEUED_AFTER_S": "1", "FDL_REAPER_INTERVAL_S": "1"},
    ) as worker:
        spec = JobSpec.model_validate({"model": "mnist_logreg", **MNIST_TINY})
        job_id = worker.store.create(spec.model_dump(mode="json"), queue=worker.queue)["id"]
        record = worker.wait_done(job_id, timeout=120)
    assert record["status"] == "succeeded", (record, worker.process.log_tail())
    assert record["attempts"] == 1


# What the worker logs when it stopped a job whose record is gone.
RECORD_GONE = "stopped, nothing published: its record is gone"


def test_a_job_whose_record_redis_lost_stops_and_is_not_recreated(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    """Redis restarts without its data (no append-only file, a failover to an empty replica)
    while a real worker trains: the job's record is gone. Before, the worker's next heartbeat
    or progress report wrote a record of only those fields (and an event stream nothing
    prunes), and the job trained on and published a version that no job record names. Now
    those writes need the record: the worker stops the job as if cancelled, publishes nothing,
    and leaves no key behind."""
    with worker_running(
        "redis-wiped-worker",
        restartable_redis.url,
        data_dir,
        tmp_path,
        logs_dir,
        {"FDL_REDIS_RETRY_S": "60", "FDL_HEARTBEAT_INTERVAL_S": "0.5"},
    ) as worker:
        job_id = worker.submit(
            model="mnist_mlp", publish_as="forgotten", **{**MNIST_TINY, "epochs": 200}
        )
        worker.wait_progress(job_id)
        restartable_redis.stop()
        for path in restartable_redis.data_dir.iterdir():  # its append-only file: data lost
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        restartable_redis.start()
        client = redis.Redis.from_url(restartable_redis.url)
        keys = (JOB_KEY.format(job_id), EVENTS_KEY.format(job_id))
        try:
            wait_for(
                lambda: RECORD_GONE in worker.process.log_tail(20_000) or client.exists(*keys),
                120,
                "the worker to stop the job (or to write its record again)",
                interval=0.2,
                check=worker.process.ensure_alive,
            )
            assert client.exists(*keys) == 0, (client.hgetall(keys[0]), worker.process.log_tail())
            assert client.keys("fdl:job*") == []
        finally:
            client.close()
        assert not (worker.model_dir / "forgotten").exists()
        # The worker takes the next job as usual.
        assert worker.wait_done(worker.submit(model="mnist_logreg", **MNIST_TINY))["status"] == (
            "succeeded"
        )
