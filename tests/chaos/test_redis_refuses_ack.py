"""Redis at its ``maxmemory`` (no eviction) refuses Celery's acknowledgement of a message, a
transaction (``ZREM``/``HDEL`` in ``MULTI``) that such a Redis refuses whole: the worker's
consumer reconnects, again and again while Redis stays full, and runs the next job once it takes
writes again; the message stays unacknowledged, for Redis to deliver again after the visibility
timeout. Before (``broker_channel_error_retry`` off, Celery's default), the worker's main
process exited 1 ("Unrecoverable error: …OutOfMemoryError") and its jobs waited for a restart."""

from __future__ import annotations

from pathlib import Path

import redis

from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, worker_running
from tests.chaos.fill_redis_task import FILL_REDIS_TASK

# What the consumer logs when a reconnection, after the refused ack and the refused restore of
# the message, meets the full Redis too.
RECONNECT_REFUSED = "consumer: Cannot connect to"


def test_the_worker_outlives_a_refused_acknowledgement(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    client = redis.Redis.from_url(restartable_redis.url, decode_responses=True)
    # The worker imports the task that fills Redis as it returns, on top of its own.
    include = {"CELERY_WORKER_INCLUDE": "tests.chaos.fill_redis_task"}
    with worker_running(
        "redis-full-ack-worker", restartable_redis.url, data_dir, tmp_path, logs_dir, include
    ) as worker:
        message_id = worker.app.send_task(FILL_REDIS_TASK, queue=worker.queue).id
        try:
            wait_for(
                lambda: (
                    not worker.process.alive()
                    or RECONNECT_REFUSED in worker.process.log_tail(100_000)
                ),
                60,
                "the worker to reconnect to a full Redis, or to exit",
                interval=0.2,
            )
        finally:
            client.config_set("maxmemory", 0)
        worker.process.ensure_alive()
        job_id = worker.submit(model="mnist_logreg", **MNIST_TINY)
        record = worker.wait_done(job_id)

        # The job's own message is acknowledged once its task has returned, just after its
        # record says succeeded: wait for that, then only the refused one is left.
        def refused_alone() -> list[str] | None:
            left = client.hvals("unacked")
            return left if len(left) <= 1 else None

        unacked = wait_for(refused_alone, 30, "the job's message to be acknowledged")
        log = worker.process.log_tail(200_000)
    assert record["status"] == "succeeded", (record, log)
    assert "Connection to broker lost" in log and "(server:OutOfMemoryError)" in log  # the ack
    assert "Unrecoverable error" not in log
    # The refused message alone is left unacknowledged, for its redelivery.
    assert len(unacked) == 1 and message_id in unacked[0], unacked
