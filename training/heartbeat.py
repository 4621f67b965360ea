"""A thread that keeps a running job's ``heartbeat_at`` fresh while its worker process lives."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from fdl.jobs import JobStore, NotThisRun

log = logging.getLogger(__name__)


class Heartbeat:
    """Beats every ``interval_s`` for the run named ``run`` (the worker name it claimed the job
    under; None: any run). A beat that the record refuses, the job no longer being this run's
    (it ended, or another run claimed it), stops the beating and sets ``lost``, which the run
    checks to stop too: a lost run's beats must not hide that the run holding the job now died."""

    def __init__(
        self, store: JobStore, job_id: str, interval_s: float, run: str | None = None
    ) -> None:
        self._store, self._job_id, self._interval, self._run_name = store, job_id, interval_s, run
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._store.heartbeat(self._job_id, self._run_name)
            except NotThisRun:
                log.warning("job %s is no longer this run's; its heartbeat stops", self._job_id)
                self.lost.set()
                return
            except Exception:  # Redis hiccup: the next beat retries
                log.warning("heartbeat for job %s failed", self._job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
