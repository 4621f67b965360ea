"""A lost job is ended (or queued again) only by a reaper that holds the model repository's lock,
on a real Redis and a real repository: while another process holds the lock (a worker paused
between its record's last check and its version's rename, stood in for here by a process that
only holds it), the reaper, and a redelivered message of a job out of attempts, leave the job
running for a later pass; once that process is SIGKILLed the kernel releases its lock and the
next pass settles the job. Before, the reaper decided without the lock, and a paused worker that
resumed renamed its version in for a job already ended ``failed`` or ``cancelled``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.jobs import JobStore
from fdl.repository import LOCK_FILE
from harness.redis import redis_running
from training.job import run_job
from training.reaper import reap_once
from training.settings import WorkerSettings

# Another process that takes the repository's lock (the repository's own FileLock), says so, and
# holds it until it is killed.
HOLDER = (
    "import sys\n"
    "from filelock import FileLock\n"
    "lock = FileLock(sys.argv[1], thread_local=False)\n"
    "lock.acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def store(tmp_path: Path, logs_dir: Path) -> Iterator[JobStore]:
    with redis_running(tmp_path / "redis", logs_dir, "redis-reaper-fence") as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        yield JobStore(client)
        client.close()


def settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        stale_after_s=5,
        heartbeat_interval_s=1,
        max_attempts=2,
    )


def lost_job(store: JobStore, job_id: str, attempts: int, cancel: bool = False) -> None:
    """A job claimed ``attempts`` times, the last by a run whose heartbeat is a minute old."""
    store.create({"model": "mnist_logreg", "publish_as": "m"}, job_id, "q")
    for _ in range(attempts):
        store.mark_running(job_id, "paused-worker:1", heartbeat_before=time.time() + 1)
    store.set_fields(job_id, heartbeat_at=time.time() - 60)
    if cancel:
        assert store.request_cancel(job_id)["status"] == "running"  # only flagged


def hold_lock(model_dir: Path) -> subprocess.Popen[str]:
    model_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", HOLDER, str(model_dir / LOCK_FILE)]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def kill(holder: subprocess.Popen[str]) -> None:
    holder.kill()  # SIGKILL: a crashed holder's lock is released by the kernel
    holder.wait(10)


def test_the_reaper_settles_lost_jobs_only_under_the_repository_lock(
    store: JobStore, tmp_path: Path
) -> None:
    lost_job(store, "out", attempts=2)
    lost_job(store, "again", attempts=1)
    lost_job(store, "cancel", attempts=1, cancel=True)
    config = settings(tmp_path)
    sent: list[str] = []
    holder = hold_lock(config.model_dir)
    try:
        for _ in range(2):  # pass after pass, while the lock stays held
            assert reap_once(store, config, lambda job_id, *_: sent.append(job_id)) == []
        for job_id in ("out", "again", "cancel"):
            assert store.get(job_id)["status"] == "running", job_id
        assert sent == []
    finally:
        kill(holder)
    actions = reap_once(store, config, lambda job_id, *_: sent.append(job_id))
    assert sorted(actions) == [("again", "requeued"), ("cancel", "cancelled"), ("out", "failed")]
    assert sent == ["again"]


def test_a_redelivered_job_out_of_attempts_is_ended_only_under_the_repository_lock(
    store: JobStore, tmp_path: Path
) -> None:
    lost_job(store, "out", attempts=2)
    config = settings(tmp_path)
    holder = hold_lock(config.model_dir)
    try:
        assert run_job("out", store, config, "rescuer:2") is None
        assert store.get("out")["status"] == "running"
    finally:
        kill(holder)
    assert run_job("out", store, config, "rescuer:2") is None
    record = store.get("out")
    assert record["status"] == "failed" and "gave up after 2 attempts" in record["error"]
