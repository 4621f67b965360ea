"""Redis made a read-only replica (``REPLICAOF``, as during a failover) under an idle worker: it
answers PING but refuses writes, so each reconnection of the worker's consumer passes kombu's
check, then fails on the ``SET`` of the mutex that kombu's transport takes to restore unacked
messages as the connection joins the event loop. The worker closes each such connection and waits
longer between attempts (:class:`training.tasks.TrainConsumer`), and consumes again once Redis
takes writes. Before, Celery left the two sockets of every attempt open and tried again at once:
about six attempts a second, twelve connections more each second, never closed, until Redis
reached ``maxclients``."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import MNIST_TINY, worker_running
from tests.chaos.redis_refusals import read_only

REFUSED = "You can't write against a read only replica"
CONNECTED = "Connected to redis://"
READ_ONLY_S = 8
LOG_CHARS = 1_000_000
# Connections an attempt may hold while it is being made, over the worker's idle count.
ATTEMPT_CONNECTIONS = 4


def broker_connections(pid: int, port: int) -> int:
    """The TCP connections of the worker (its main process and pool) to the Redis on ``port``."""
    main = psutil.Process(pid)
    count = 0
    for process in [main, *main.children(recursive=True)]:
        try:
            sockets = process.net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        count += sum(1 for s in sockets if s.raddr and s.raddr.port == port)
    return count


def test_a_read_only_redis_costs_the_idle_worker_no_connections(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    port = restartable_redis.port
    with worker_running(
        "redis-read-only-worker", restartable_redis.url, data_dir, tmp_path, logs_dir
    ) as worker:
        pid, log_of = worker.process.pid, worker.process.log_tail
        idle = broker_connections(pid, port)
        with read_only(restartable_redis):
            # Sampled over the whole window (as long as a failover takes here), then judged.
            deadline, most = time.monotonic() + READ_ONLY_S, idle
            while time.monotonic() < deadline:
                worker.process.ensure_alive()
                most = max(most, broker_connections(pid, port))
                time.sleep(0.2)
            log = log_of(LOG_CHARS)
        attempts, connected = log.count(REFUSED), log.count(CONNECTED)
        assert most <= idle + ATTEMPT_CONNECTIONS, (idle, most, attempts)
        assert 1 <= attempts <= 10, (attempts, log[-5000:])  # backing off, not six a second
        assert "Frequent restarts detected" not in log

        wait_for(
            lambda: log_of(LOG_CHARS).count(CONNECTED) > connected,
            10,
            "the consumer to connect again",
            check=worker.process.ensure_alive,
        )
        # Nothing of the refused attempts is left open.
        wait_for(
            lambda: broker_connections(pid, port) <= idle,
            10,
            f"the worker's connections back to {idle}",
            interval=0.2,
        )
        job_id = worker.submit(model="mnist_logreg", **MNIST_TINY)
        record = worker.wait_done(job_id)
    assert record["status"] == "succeeded", (record, log_of(5000))
