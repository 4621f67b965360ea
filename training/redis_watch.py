"""How long Redis has been reachable to a reaper, so that it does not take a heartbeat gap that
an outage explains for a lost run.

While Redis is away (stopped, restarting, paused by SIGSTOP, out of this worker's reach), no
worker can write a heartbeat, and a reaper's pass may come right when Redis is back, before the
live runs' next beats land: every running job then looks lost. A reaper therefore judges runs
lost only once Redis has answered it without a break for :func:`outage_grace_s`: by then each
live run has beaten again. A stopped Redis fails calls (the store retries them, so the call
only takes long); a paused one answers them late; either way a call to it that takes longer than
a heartbeat interval, or fails, restarts the count. So does a whole pass of the reaper that took
that long (any of its calls may have waited out an outage), and the reaper reads Redis's clock
this way between its passes too (:meth:`RedisWatch.wait`), so that an outage that falls between
two passes is seen as well. The count is each reaper's own: a worker cut off from Redis while the
others were not waits the grace, and the others judge meanwhile.

A Redis that refuses writes (at its ``maxmemory`` without eviction, ``MISCONF``, a ``READONLY``
replica) still answers reads, its clock among them, while no heartbeat can be written: each
reading of the clock therefore comes with a small write (:data:`PROBE_KEY`, which expires by
itself), and a refused one is a break as a failed call is. So is a write of the reaper's own
that Redis refused or failed (its settling of a lost run, :meth:`RedisWatch.unreachable`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from fdl.jobs import JobStore

log = logging.getLogger(__name__)

# After an outage a live run's heartbeat thread tries again within 2 s (the store's retry waits
# at most that long), and its first beat may carry a time read before the outage (a Redis paused
# between the read and the write): its second beat, one interval later, is a fresh one. Margin
# for a busy process's late beat on top.
GRACE_HEARTBEATS = 2
GRACE_MARGIN_S = 5.0
# The key each reading of Redis's clock writes, to learn that Redis takes writes (one for every
# reaper: what it holds does not matter), and how long it stays.
PROBE_KEY = "fdl:reaper:write-probe"
PROBE_EXPIRY_S = 60


def outage_grace_s(heartbeat_interval_s: float) -> float:
    """How long Redis must have been reachable to a reaper before it judges a run lost."""
    return GRACE_HEARTBEATS * heartbeat_interval_s + GRACE_MARGIN_S


class RedisWatch:
    """Reads Redis's clock for a reaper and keeps since when Redis has answered it and taken
    its writes without a break (a call that failed or was refused, or took longer than a
    heartbeat interval, is one), in monotonic seconds. It counts from its creation: nothing is
    known of before."""

    def __init__(self, store: JobStore, heartbeat_interval_s: float) -> None:
        self.store = store
        self.slow_s, self.grace_s = heartbeat_interval_s, outage_grace_s(heartbeat_interval_s)
        self.since: float | None = time.monotonic()

    def now(self) -> float:
        """Redis's clock (:meth:`fdl.jobs.JobStore.now`), noting how its call went, and how a
        write of :data:`PROBE_KEY` then went (tried once: a refused one is a break, and the
        clock is still answered); raises what the clock's call raised."""
        started = time.monotonic()
        try:
            now = self.store.now()
        except Exception:
            self.unreachable()
            raise
        try:
            self.store.redis.set(PROBE_KEY, "1", ex=PROBE_EXPIRY_S)
        except redis.exceptions.RedisError as error:  # refused, still loading its data, gone
            self.unreachable(error)
            return now
        if self.since is None:
            self.since = started
        self.note(started, time.monotonic(), "reading Redis's clock")
        return now

    def note(self, started: float, ended: float, what: str) -> None:
        """Calls to Redis (``what``) ran from ``started`` to ``ended`` (monotonic): taking
        longer than a heartbeat interval, they may have waited out an outage, which ended then
        at the latest. Nothing changes while the last call found Redis unreachable."""
        if self.since is not None and ended - started > self.slow_s:
            log.warning(
                "%s took %.1fs (Redis away or slow?): lost runs are judged once Redis has "
                "answered for %.0fs",
                what,
                ended - started,
                self.grace_s,
            )
            self.since = ended

    def unreachable(self, error: BaseException | None = None) -> None:
        """A call found Redis unreachable (past the store's retries), or Redis refused or failed
        a write (``error``): until it answers and takes writes again, no run is judged lost."""
        if self.since is not None:
            log.warning(
                "Redis %s: lost runs are judged once it has answered and taken writes for %.0fs",
                "is unreachable" if error is None else f"refused or failed a write ({error})",
                self.grace_s,
            )
        self.since = None

    def reachable_s(self) -> float:
        """How long Redis has answered without a break, up to now (0: its last call failed)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def judging(self) -> bool:
        """Whether Redis has answered for the grace: a heartbeat gap is a lost run's now."""
        return self.reachable_s() >= self.grace_s

    def wait(self, seconds: float, stopped: threading.Event) -> bool:
        """Wait ``seconds`` (True at once when ``stopped`` is set), reading Redis's clock every
        half heartbeat interval meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if stopped.wait(min(left, self.slow_s / 2)):
                return True
            with contextlib.suppress(Exception):  # noted; the reaper's next pass says more
                self.now()
        return stopped.is_set()
