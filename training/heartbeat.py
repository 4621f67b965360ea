"""A thread that keeps a running job's ``heartbeat_at`` fresh while its worker process lives."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from fdl.jobs import JobStore

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, store: JobStore, job_id: str, interval_s: float) -> None:
        self._store, self._job_id, self._interval = store, job_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._store.heartbeat(self._job_id)
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
