"""What the tests of a finished job's wait for the model repository's lock share: another
writer that holds the lock (a real ``FileLock`` held by a thread of the test), the job's notes
that it waits, its export, and the settings and spec of a tiny job that waits in rounds of 1 s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from fdl.jobs import JobStore
from fdl.repository import LOCK_FILE
from harness.procs import wait_for

WAITING = "waiting for the model repository's lock"
# Shorter than the 120 s a job waited before, so that a job that does not wait in rounds
# (the code before this change) is still waiting when the holder gives the lock up.
HOLD_AT_MOST_S = 100.0
TINY: dict[str, Any] = {"model": "mnist_logreg", "max_train_examples": 96, "publish_as": "m"}
SETTINGS: dict[str, Any] = {"publish_lock_wait_s": 1, "heartbeat_interval_s": 0.2}


class LockHolder(threading.Thread):
    """Another writer: holds the repository's lock (a real ``FileLock`` on its lock file) from
    before the job reaches its publish until ``release()``, polled from this thread, returns
    true, or at most ``HOLD_AT_MOST_S``; ``error`` says when it gave up instead."""

    def __init__(self, model_dir: Path, release: Callable[[], bool]) -> None:
        super().__init__(name="lock-holder", daemon=True)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(model_dir / LOCK_FILE, thread_local=False)
        self.release = release
        self.held = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        with self.lock:
            self.held.set()
            try:
                wait_for(self.release, HOLD_AT_MOST_S, "the moment to give the lock up")
            except BaseException as error:  # reported by the test, in its own thread
                self.error = error

    def __enter__(self) -> LockHolder:
        self.start()
        assert self.held.wait(30), "the holder did not get the lock"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.join(HOLD_AT_MOST_S + 30)
        assert not self.is_alive()


def waits(store: JobStore, job_id: str) -> list[str]:
    """The job's events that say it waits for the repository's lock."""
    return [
        str(event["data"]["message"])
        for _id, event in store.read_events(job_id, count=10_000)
        if event["type"] == "log" and str(event["data"].get("message")).startswith(WAITING)
    ]


def staged(model_dir: Path, job_id: str) -> list[Path]:
    return list(model_dir.glob(f".tmp-m-{job_id}-*"))
