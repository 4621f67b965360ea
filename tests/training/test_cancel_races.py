"""A cancellation that arrives while a finished job waits for the model repository's lock (a
promotion or another job's publish holds it): the job ends ``cancelled`` and publishes nothing
(before, the flag was read only before the wait, and the job published after it)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import redis

from fdl import contract
from fdl.repository import Repository
from fdl.repository_reads import list_versions
from harness.procs import wait_for
from harness.redis import redis_running
from harness.worker import MNIST_TINY, worker_running


class Monitor(threading.Thread):
    """The commands Redis runs (MONITOR), with Redis's time, collected in the background."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.seen: list[dict[str, Any]] = []
        self.ready = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(redis.ConnectionError), self.client.monitor() as monitor:
            self.ready.set()
            for command in monitor.listen():  # until Redis stops at the test's end
                self.seen.append(command)

    def cancel_checks(self, job_id: str, after: float) -> int:
        wanted = f"HMGET fdl:job:{job_id} status cancel_requested"
        return sum(1 for c in list(self.seen) if c["command"] == wanted and c["time"] > after)


def test_a_cancel_while_waiting_for_the_repository_lock_publishes_nothing(
    data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with (
        redis_running(tmp_path / "redis", logs_dir, "redis-cancel-race") as url,
        worker_running("cancel-race-worker", url, data_dir, tmp_path, logs_dir) as worker,
    ):
        monitor = Monitor(url)
        monitor.start()
        assert monitor.ready.wait(10)
        lock = Repository(worker.model_dir).file_lock()
        lock.acquire()  # as a promotion waiting for the model server would hold it
        try:
            job_id = worker.submit(model="mnist_logreg", publish_as="raced", **MNIST_TINY)
            pattern = f".tmp-raced-{job_id}-*/{contract.METADATA_FILE}"

            def exported() -> float | None:  # metadata.json is the export's last file
                found = list(worker.model_dir.glob(pattern))
                return found[0].stat().st_mtime if found else None

            done = wait_for(exported, 120, "the export", check=worker.process.ensure_alive)
            # The worker read the flag after its export: it now waits for the lock.
            wait_for(lambda: monitor.cancel_checks(job_id, done), 30, "the check after export")
            assert worker.store.request_cancel(job_id)["status"] == "running"  # only flagged
        finally:
            lock.release()
        record = worker.wait_done(job_id, timeout=60)
    assert record["status"] == "cancelled", record
    assert not list_versions(worker.model_dir / "raced")
    assert not list(worker.model_dir.glob(".tmp-raced-*"))  # the export was removed
