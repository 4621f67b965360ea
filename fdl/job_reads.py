"""The reading half of :class:`fdl.jobs.JobStore`: records, their index, the flags a worker
polls, and event streams, as the gateway and the workers read them (no writes here)."""

from __future__ import annotations

import json
import threading
from typing import Any, cast

import redis

from fdl.job_records import (
    EVENTS_KEY,
    INDEX_KEY,
    JOB_KEY,
    Events,
    JobStatus,
    StreamReply,
    decode_events,
    decode_record,
)
from fdl.store_retry import retried as _retried

# The method JobReads.list hides the builtin inside the class body.
_Statuses = list[tuple[str, str | None]]
_Ids = list[str]
_Rows = list[tuple[str, list[str | None]]]  # (job id, raw field values)


class JobReads:
    """Reads of job records; :class:`fdl.jobs.JobStore` adds the writes. Reads return plain
    dicts (every field of a record present, ``None`` when unset) or ``None`` for an unknown
    job."""

    redis: redis.Redis
    retry_for_s: float
    _local: threading.local

    @_retried
    def now(self) -> float:
        """Redis's clock, in epoch seconds. Every time the store writes (a heartbeat, a send, a
        start) and every cut-off compared with one (a reaper's, a claim's) is read from it, so
        machines whose own clocks disagree never take a live job for lost."""
        seconds, microseconds = self.redis.time()
        return seconds + microseconds / 1e6

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
        records, each in one step (HGETALL), in a pipeline without a transaction: a Redis at its
        maxmemory refuses MULTI's queued commands, reads too, and the records read together
        need no more than each its own consistency (a page's ids are read before them anyway)."""
        if status is None:
            total = int(self.redis.zcard(INDEX_KEY))
            page_ids = cast(list[str], self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1))
        else:
            matching = [i for i, s in self.statuses() if s == status]
            total, page_ids = len(matching), matching[offset : offset + limit]
        pipe = self.redis.pipeline(transaction=False)
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
    def waiting(self, queue: str) -> int:
        """How many jobs of ``queue`` are still queued (records, so a job whose message a reaper
        sent again counts once); reads two fields of every indexed record."""
        wanted = [json.dumps(JobStatus.QUEUED.value), json.dumps(queue)]
        return sum(1 for _, values in self._scan("status", "queue") if values == wanted)

    @_retried
    def cancel_requested(self, job_id: str) -> bool:
        """Whether cancellation was requested."""
        value = self.redis.hget(JOB_KEY.format(job_id), "cancel_requested")
        return bool(value and json.loads(value))

    @_retried
    def stop_requested(self, job_id: str) -> bool:
        """Whether the worker running the job should stop it (it polls this between batches):
        its cancellation was requested, or its record is gone (pruned, deleted, or lost with
        Redis's data), so that nobody could follow it or be told what it published."""
        status, flag = self.redis.hmget(JOB_KEY.format(job_id), ["status", "cancel_requested"])
        return status is None or bool(flag and json.loads(flag))

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
