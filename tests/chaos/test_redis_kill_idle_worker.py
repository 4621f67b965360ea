"""Redis SIGKILLed under an idle worker and started again at once on its port (as a supervisor
restarts it): the worker reconnects and answers a ping, and its log holds no traceback. Before,
Celery's gossip step, restarted after the lost connection, logged "Error on restarting Gossip"
with kombu's AttributeError traceback (the worker now runs without gossip and mingle, which
nothing here uses)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness.procs import wait_for
from harness.redis import RestartableRedis
from harness.worker import worker_running


def test_an_idle_worker_reconnects_to_a_killed_redis_without_a_traceback(
    restartable_redis: RestartableRedis, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with worker_running(
        "redis-kill-idle-worker", restartable_redis.url, data_dir, tmp_path, logs_dir
    ) as worker:
        connected = worker.process.log_tail(100_000).count("Connected to redis")
        process = restartable_redis.process
        assert process is not None
        os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(10)
        process.stop()  # closes its log
        restartable_redis.start()  # at once, as a supervisor restarts it
        wait_for(
            lambda: worker.process.log_tail(100_000).count("Connected to redis") > connected,
            60,
            "the worker to reconnect",
            interval=0.2,
            check=worker.process.ensure_alive,
        )
        wait_for(
            lambda: worker.app.control.ping(timeout=0.5),
            60,
            "the worker to answer a ping",
            check=worker.process.ensure_alive,
        )
        log = worker.process.log_tail(100_000)
    assert "Traceback" not in log and "Gossip" not in log, log[-4000:]
