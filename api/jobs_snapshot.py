"""Job statuses as the gateway reads them in bulk (``fdl_jobs{state}`` on ``/metrics``,
``GET /v1/jobs?status=``): one scan of every record's status at a time per process, its result
shared by every caller for a short while.

A scan reads the status of every record kept (a deployment keeps ``FDL_JOB_RETENTION_S`` of
them: 100 000 take over a second). Each scrape after the metrics' cache expired, and each listing
by status, used to run its own, so a flood of anonymous ``/metrics`` requests multiplied it, each
holding every record's reply at once (gigabytes, the thread pool full, other requests waiting).
Now one caller scans (``fdl/job_reads.py:_scan``, a step of ``SCAN_CHUNK`` records at a time);
those that need statuses meanwhile wait for that scan, or take the previous one, never start
their own. A scrape never waits while there is a snapshot: it takes it, and starts the scan in
the background when it is older than the metrics' cache. The snapshot keeps only the ids,
grouped by status.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from api.errors import STORE_RETRY_AFTER_S, ApiError
from fdl.jobs import JobStore

SCANS = Counter(
    "fdl_gateway_job_status_scans_total",
    "Scans of every job record's status (one at a time per process, shared by fdl_jobs and "
    "listings by status)",
)
# How long after its scan ended a snapshot serves listings by status (their ids and total; the
# page's records are read fresh): membership read at most this plus that scan's duration before.
# Measured from the end, so a scan slower than this still serves the listings that follow it. The
# metrics take theirs for 5 s (api/metrics.py:JobsCollector).
LIST_MAX_AGE_S = 2.0
# How long a listing waits for the scan under way before it takes the previous snapshot, and how
# old that one's membership may then be (from the start of its scan); older, or none: 503
# job_store_busy. The metrics never wait while they have a snapshot, and leave fdl_jobs out when
# they have none after the wait.
WAIT_S = 10.0
LIST_STALE_MAX_S = 30.0


@dataclass(frozen=True)
class StatusSnapshot:
    """Every indexed job's id by status (None: an index entry without a record), newest first,
    as a scan from ``started_at`` to ``ended_at`` (``time.monotonic()``) read them."""

    started_at: float
    ended_at: float
    ids: Mapping[str | None, Sequence[str]]

    def age_s(self) -> float:
        """Since its scan ended: what reuse is measured by."""
        return time.monotonic() - self.ended_at

    def read_age_s(self) -> float:
        """Since its scan began: how old its membership may be."""
        return time.monotonic() - self.started_at

    def counts(self) -> dict[str | None, int]:
        return {status: len(ids) for status, ids in self.ids.items()}


class SnapshotBusy(Exception):
    """No snapshot recent enough, and the scan under way did not end within the wait (or could
    not start)."""


class StatusSnapshots:
    """The latest snapshot of one store and the scan under way, if any (a future its caller
    completes: the others wait on it, from a thread or from the event loop)."""

    def __init__(self, store: JobStore, wait_s: float = WAIT_S) -> None:
        self.store = store
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._latest: StatusSnapshot | None = None
        self._scan: futures.Future[StatusSnapshot] | None = None

    def get(self, max_age_s: float, stale_ok: bool = False) -> StatusSnapshot:
        """A snapshot whose scan ended at most ``max_age_s`` ago: the latest, or the next scan's
        (this caller's when none is under way). ``stale_ok``: when there is one, the latest at
        once however old, a scan refreshing it in the background if none is under way. From a
        worker thread: this may block."""
        latest, scan, mine = self._join(max_age_s)
        if scan is None:
            assert latest is not None
            return latest
        if stale_ok and latest is not None:
            if mine:
                self._start(scan)
            return latest
        if mine:
            self._run(scan)
        done, _ = futures.wait([scan], timeout=self.wait_s)
        return scan.result() if done else self._previous(latest, None, self._late())

    async def aget(self, max_age_s: float, stale_max_s: float | None = None) -> StatusSnapshot:
        """:meth:`get` from the event loop (waiting for a scan holds no thread); after the wait,
        the previous snapshot only if its membership is at most ``stale_max_s`` old."""
        latest, scan, mine = self._join(max_age_s)
        if scan is None:
            assert latest is not None
            return latest
        if mine:
            self._start(scan)
        waiter = asyncio.wrap_future(scan)
        done, _ = await asyncio.wait({waiter}, timeout=self.wait_s)
        if not done:
            waiter.cancel()  # only the wrapper: the scan is running, and cannot be cancelled
            return self._previous(latest, stale_max_s, self._late())
        if isinstance(waiter.exception(), SnapshotBusy):  # the scan could not start
            return self._previous(latest, stale_max_s, str(waiter.exception()))
        return waiter.result()

    def _join(
        self, max_age_s: float
    ) -> tuple[StatusSnapshot | None, futures.Future[StatusSnapshot] | None, bool]:
        """(the latest snapshot, the scan to wait for or None when the latest will do, whether
        the caller must run that scan itself)."""
        with self._lock:
            latest = self._latest
            if latest is not None and latest.age_s() <= max_age_s:
                return latest, None, False
            if self._scan is not None:
                return latest, self._scan, False
            scan: futures.Future[StatusSnapshot] = futures.Future()
            # Running: a waiter that gives up (asyncio.wrap_future's cancel) cannot cancel it.
            scan.set_running_or_notify_cancel()
            self._scan = scan
            return latest, scan, True

    def _start(self, scan: futures.Future[StatusSnapshot]) -> None:
        """Run ``scan`` in a thread of its own, not the pool's: a pool full of requests cannot
        hold it back (others wait for it), and it ends, its snapshot kept, when the request that
        started it is cancelled."""
        try:
            threading.Thread(target=self._run, args=(scan,), name="job-status-scan").start()
        except BaseException as error:  # RuntimeError: the OS refused a thread (under load)
            self._fail(scan, SnapshotBusy(f"the job status scan could not start ({error})"))
            if not isinstance(error, Exception):
                raise

    def _run(self, scan: futures.Future[StatusSnapshot]) -> None:
        """Scan and complete ``scan`` with the snapshot, or with the error every waiter gets."""
        SCANS.inc()
        started = time.monotonic()
        try:
            ids = self.store.ids_by_status()
        except BaseException as error:  # KeyboardInterrupt too: never leave the waiters waiting
            self._fail(scan, error)
            if not isinstance(error, Exception):
                raise
            return
        snapshot = StatusSnapshot(started, time.monotonic(), ids)
        with self._lock:
            self._latest, self._scan = snapshot, None
        scan.set_result(snapshot)

    def _fail(self, scan: futures.Future[StatusSnapshot], error: BaseException) -> None:
        """No scan under way any more (the next caller starts one); ``scan``'s waiters get
        ``error``."""
        with self._lock:
            self._scan = None
        scan.set_exception(error)

    def _late(self) -> str:
        return f"the job status scan under way did not end within {self.wait_s:g}s"

    def _previous(
        self, latest: StatusSnapshot | None, stale_max_s: float | None, why: str
    ) -> StatusSnapshot:
        """``latest`` when a caller gets no new snapshot (``why``), if it is recent enough."""
        if latest is None:
            raise SnapshotBusy(f"{why}, and there is no previous snapshot")
        if stale_max_s is not None and latest.read_age_s() > stale_max_s:
            raise SnapshotBusy(
                f"{why}, and the previous snapshot is {latest.read_age_s():.0f}s old (more than "
                f"{stale_max_s:g}s)"
            )
        return latest


_BY_STORE: WeakKeyDictionary[JobStore, StatusSnapshots] = WeakKeyDictionary()
_BY_STORE_LOCK = threading.Lock()


def snapshots_for(store: JobStore) -> StatusSnapshots:
    """The one :class:`StatusSnapshots` of ``store`` (the app's, which ``/metrics`` and the
    listings share)."""
    with _BY_STORE_LOCK:
        snapshots = _BY_STORE.get(store)
        if snapshots is None:
            snapshots = _BY_STORE[store] = StatusSnapshots(store)
        return snapshots


async def listed_by_status(
    store: JobStore, status: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the jobs in ``status``, newest first, and their number, as ``JobStore.list``
    answers: the page's ids and the number from a snapshot whose scan ended at most
    LIST_MAX_AGE_S ago, the records read fresh, those no longer in ``status`` left out (the page
    may be short). A scan slower than WAIT_S, and no previous snapshot LIST_STALE_MAX_S fresh:
    503 job_store_busy."""
    try:
        snapshot = await snapshots_for(store).aget(LIST_MAX_AGE_S, LIST_STALE_MAX_S)
    except SnapshotBusy as error:
        raise ApiError(
            503,
            "job_store_busy",
            "the job store is busy counting jobs by status; try again shortly",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        ) from error
    ids = snapshot.ids.get(status, ())
    page = ids[offset : offset + limit]
    records = await run_in_threadpool(store.records, page) if page else []
    return [r for r in records if r.get("status") == status], len(ids)
