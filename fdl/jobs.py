"""Training-job records in Redis: the store the gateway reads and the worker writes.

The record layout and the status scripts are in :mod:`fdl.job_records`. Each status change,
with its ``status`` event, is one Lua script: a terminal status is never overwritten, and a
retry of a change that applied but whose reply was lost changes nothing (a token per call).

A store made with ``retry_for_s`` (the worker's) retries every operation while Redis is
unreachable, for at most that long: a Redis restart in the middle of a job pauses the job's
bookkeeping instead of failing it. The gateway's store does not retry: it answers 503 at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, cast

import redis
from redis.commands.core import Script

from fdl.job_records import (
    CANCEL_SCRIPT,
    CLAIM_SCRIPT,
    CREATE_SCRIPT,
    EVENTS_KEY,
    EVENTS_MAXLEN,
    INDEX_KEY,
    JOB_KEY,
    PRUNE_SCRIPT,
    REQUEUE_STALE_SCRIPT,
    RESEND_BACKOFF_CAP,
    RESEND_SCRIPT,
    TERMINAL,
    TRANSITION_SCRIPT,
    Events,
    JobStatus,
    StreamReply,
    decode_events,
    decode_record,
    new_job_id,
    new_record,
    script_args,
)
from fdl.store_retry import retried as _retried

# What callers of the store use with it (the record layout itself is fdl.job_records').
__all__ = ["TERMINAL", "JobStatus", "JobStore", "new_job_id"]

# The method JobStore.list hides the builtin inside the class body.
_Statuses = list[tuple[str, str | None]]
_Ids = list[str]
_Rows = list[tuple[str, list[str | None]]]  # (job id, raw field values)
# Jobs removed per round trip by JobStore.prune.
PRUNE_BATCH = 500


class JobStore:
    """Job records, their index and their event streams in one Redis.

    Args:
        client: a Redis client made with ``decode_responses=True`` (:meth:`from_url` makes one).
        retry_for_s: how long each operation retries while Redis is unreachable; 0 fails at once.

    Reads return plain dicts (every field of a record present, ``None`` when unset) or ``None``
    for an unknown job; status changes return whether they applied.
    """

    def __init__(self, client: redis.Redis, retry_for_s: float = 0.0) -> None:
        self.redis = client
        self.retry_for_s = retry_for_s
        self._local = threading.local()
        self._create = client.register_script(CREATE_SCRIPT)
        self._transition = client.register_script(TRANSITION_SCRIPT)
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._requeue_stale = client.register_script(REQUEUE_STALE_SCRIPT)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self._resend = client.register_script(RESEND_SCRIPT)
        self._prune = client.register_script(PRUNE_SCRIPT)

    @classmethod
    def from_url(cls, url: str, retry_for_s: float = 0.0) -> JobStore:
        """A store on the Redis at ``url`` (a client that decodes responses); ``retry_for_s`` > 0
        retries operations that find Redis unreachable for that long."""
        return cls(redis.Redis.from_url(url, decode_responses=True), retry_for_s)

    @_retried
    def now(self) -> float:
        """Redis's clock, in epoch seconds. Every time the store writes (a heartbeat, a send, a
        start) and every cut-off compared with one (a reaper's, a claim's) is read from it, so
        machines whose own clocks disagree never take a live job for lost."""
        seconds, microseconds = self.redis.time()
        return seconds + microseconds / 1e6

    @_retried
    def _run(self, script: Script, job_id: str, args: list[str], *keys: str) -> int:
        """Run a status script on the job (the token in ``args`` makes its retries safe)."""
        job_keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), *keys]
        return int(cast(int, script(keys=job_keys, args=args)))

    # --- records -----------------------------------------------------------------------------

    def create(
        self, spec: dict[str, Any], job_id: str | None = None, queue: str | None = None
    ) -> dict[str, Any]:
        """Record a new queued job and index it; returns the record as stored. ``spec``: the
        validated job spec as JSON-ready data; ``job_id``: the gateway's (sent with the Celery
        task), default a new one; ``queue``: the Celery queue its message goes to (a reaper of
        that queue's workers re-sends a message that was lost)."""
        job_id = job_id or new_job_id()
        now = self.now()
        record = new_record(job_id, spec, now, queue)
        event = {"status": JobStatus.QUEUED.value}
        self._run(self._create, job_id, script_args(event, repr(now), job_id, **record), INDEX_KEY)
        return record

    @_retried
    def get(self, job_id: str) -> dict[str, Any] | None:
        """Returns the job's record, or None for an unknown job."""
        return decode_record(cast(dict[str, str], self.redis.hgetall(JOB_KEY.format(job_id))))

    @_retried
    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """One page (``limit`` records after ``offset`` matching ones) of the jobs in ``status``
        (None: all), newest first, and the number of matching jobs; reads only the page's
        records."""
        if status is None:
            total = int(self.redis.zcard(INDEX_KEY))
            page_ids = cast(list[str], self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1))
        else:
            matching = [i for i, s in self.statuses() if s == status]
            total, page_ids = len(matching), matching[offset : offset + limit]
        pipe = self.redis.pipeline()
        for job_id in page_ids:
            pipe.hgetall(JOB_KEY.format(job_id))
        records = [r for r in map(decode_record, pipe.execute()) if r is not None]
        return records, total

    @_retried
    def statuses(self) -> _Statuses:
        """(job id, status) of every job, newest first, without reading the whole records."""
        return [(i, json.loads(v[0]) if v[0] else None) for i, v in self._scan("status")]

    def _scan(self, *fields: str) -> _Rows:
        """(job id, the raw values of ``fields``) of every indexed job, newest first, in one
        round trip that other clients' commands interleave with (no transaction)."""
        ids = cast(_Ids, self.redis.zrevrange(INDEX_KEY, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(JOB_KEY.format(job_id), list(fields))
        return list(zip(ids, pipe.execute(), strict=True))

    @_retried
    def set_fields(self, job_id: str, **fields: Any) -> None:
        """Set record fields (JSON-encoded) without touching the status or emitting an event."""
        self.redis.hset(
            JOB_KEY.format(job_id), mapping={k: json.dumps(v) for k, v in fields.items()}
        )

    def transition(self, job_id: str, status: JobStatus, **fields: Any) -> bool:
        """Move a non-terminal job to ``status`` and emit a ``status`` event, setting ``fields``
        in the same atomic step (``result`` and ``error`` also go into the event); False when
        the job is unknown or already terminal (nothing changed)."""
        event: dict[str, Any] = {"status": status.value}
        event.update({k: fields[k] for k in ("result", "error") if k in fields})
        args = script_args(event, status=status.value, **fields)
        return bool(self._run(self._transition, job_id, args))

    def mark_running(self, job_id: str, worker: str, heartbeat_before: float = 0.0) -> bool:
        """Atomically claim an attempt for ``worker`` and count it; False when the job is
        unknown, terminal, or running under a live heartbeat. A running job whose heartbeat is
        older than ``heartbeat_before`` (epoch seconds; its worker was lost) may be claimed too;
        the default takes only a queued job."""
        now = self.now()
        args = script_args(
            {"status": JobStatus.RUNNING.value},
            repr(heartbeat_before),
            started_at=now,
            heartbeat_at=now,
            worker=worker,
        )
        return bool(self._run(self._claim, job_id, args))

    @_retried
    def heartbeat(self, job_id: str) -> None:
        """Record that the job's worker is alive (the reaper requeues jobs whose beat stops)."""
        self.set_fields(job_id, heartbeat_at=self.now())

    def requeue_if_stale(self, job_id: str, heartbeat_before: float, reason: str) -> bool:
        """Atomically move a running job whose worker was lost back to queued; False when it is
        not running or its worker is alive (a heartbeat at or after ``heartbeat_before``, epoch
        seconds). ``reason``: why, for the ``status`` event."""
        event = {"status": JobStatus.QUEUED.value, "reason": reason}
        args = script_args(event, repr(heartbeat_before), sent_at=self.now(), resends=0)
        return bool(self._run(self._requeue_stale, job_id, args))

    def mark_resent(self, job_id: str, after_s: float) -> bool:
        """True (and the job marked sent now) when it is still queued and its message is due to
        be sent again (``after_s`` after the last send, doubling with each resend): the caller
        sends it again (one caller per period)."""
        args = [repr(after_s), repr(self.now()), str(RESEND_BACKOFF_CAP)]
        return bool(self._run(self._resend, job_id, args))

    @_retried
    def prune(self, ended_before: float) -> _Ids:
        """Remove the records, events and index entries of jobs that ended before
        ``ended_before`` (epoch seconds, Redis's clock); returns their ids. Only jobs created
        before it are looked at (a job ends after it is created), in batches that other clients'
        commands interleave with (no transaction)."""
        old = cast(_Ids, self.redis.zrangebyscore(INDEX_KEY, "-inf", f"({ended_before!r}"))
        pruned: _Ids = []
        for start in range(0, len(old), PRUNE_BATCH):
            batch = old[start : start + PRUNE_BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in batch:
                keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), INDEX_KEY]
                self._prune(keys=keys, args=[repr(ended_before), job_id], client=pipe)
            pruned += [job_id for job_id, done in zip(batch, pipe.execute(), strict=True) if done]
        return pruned

    @_retried
    def waiting(self, queue: str) -> int:
        """How many jobs of ``queue`` are still queued (records, so a job whose message a reaper
        sent again counts once); reads two fields of every indexed record."""
        wanted = [json.dumps(JobStatus.QUEUED.value), json.dumps(queue)]
        return sum(1 for _, values in self._scan("status", "queue") if values == wanted)

    @_retried
    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Store the job's progress (it counts as a heartbeat) and emit a ``progress`` event."""
        self.set_fields(job_id, progress=progress, heartbeat_at=self.now())
        self.append_event(job_id, "progress", progress)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """End the job in a terminal ``status``; False when it is unknown or already terminal."""
        assert status.terminal
        return self.transition(job_id, status, result=result, error=error, finished_at=self.now())

    # --- cancellation ------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> dict[str, Any] | None:
        """Flag a job for cancellation, atomically: a job still queued is cancelled at once, a
        running one by its worker at its next check.

        Returns:
            The record after the request, or None for an unknown job.
        """
        error = "cancelled before it started"
        event = {"status": JobStatus.CANCELLED.value, "result": None, "error": error}
        args = script_args(event, result=None, error=error, finished_at=self.now())
        if self._run(self._cancel, job_id, args) < 0:
            return None
        return self.get(job_id)

    @_retried
    def cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was requested (the worker polls this between batches)."""
        value = self.redis.hget(JOB_KEY.format(job_id), "cancel_requested")
        return bool(value and json.loads(value))

    # --- events ------------------------------------------------------------------------------

    @_retried
    def append_event(self, job_id: str, kind: str, data: dict[str, Any]) -> str:
        """Append an event of ``kind`` (``status``, ``progress``, ``log``…) with the JSON-ready
        ``data`` to the job's stream (capped at about ``EVENTS_MAXLEN`` entries); returns the
        stream entry's id."""
        entry_id = self.redis.xadd(
            EVENTS_KEY.format(job_id),
            {"type": kind, "data": json.dumps(data), "time": str(time.time())},
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )
        return cast(str, entry_id)

    @_retried
    def read_events(
        self, job_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100
    ) -> Events:
        """At most ``count`` of the job's events after the stream id ``after`` (``0-0``: from the
        first), waiting up to ``block_ms`` when there are none yet (None: no wait), oldest first:
        ``(entry id, {"type", "data", "time"})``."""
        reply = cast(
            StreamReply,
            self.redis.xread({EVENTS_KEY.format(job_id): after}, count=count, block=block_ms),
        )
        return decode_events(reply)

    def ping(self) -> bool:
        """Whether Redis answers (raises when it is unreachable)."""
        return bool(self.redis.ping())
