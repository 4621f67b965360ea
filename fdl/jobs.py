"""Training-job records in Redis: the store the gateway reads and the worker writes.

One hash per job (``fdl:job:<id>``) holds JSON-encoded fields, a sorted set indexes jobs by
creation time, and a Redis stream per job carries the events that live consumers follow.
Status changes go through a Lua script so that a terminal status is never overwritten.

A store made with ``retry_for_s`` (the worker's) retries every operation while Redis is
unreachable, for at most that long: a Redis restart in the middle of a job pauses the job's
bookkeeping instead of failing it. The gateway's store does not retry: it answers 503 at once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from enum import StrEnum
from typing import Any, cast

import redis

from fdl.store_retry import retried as _retried

JOB_KEY = "fdl:job:{}"
EVENTS_KEY = "fdl:job:{}:events"
INDEX_KEY = "fdl:jobs"
EVENTS_MAXLEN = 10_000


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# The statuses a job never leaves. Members are strings (StrEnum), so a status read from JSON
# tests membership directly: ``record["status"] in TERMINAL``.
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# KEYS[1] job hash; ARGV[1] new status; ARGV[2..] field/value pairs to set with it.
# Returns 1 when applied, 0 when the job is missing or already terminal.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
current = cjson.decode(current)
if current == 'succeeded' or current == 'failed' or current == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', cjson.encode(ARGV[1]))
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS[1] job hash; ARGV[1] heartbeat threshold (epoch seconds). A running job whose heartbeat is
# older goes back to queued (its worker died). Returns 1 when applied.
_REQUEUE_STALE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or cjson.decode(status) ~= 'running' then return 0 end
local beat = redis.call('HGET', KEYS[1], 'heartbeat_at')
if beat then
  beat = cjson.decode(beat)
  if type(beat) == 'number' and beat >= tonumber(ARGV[1]) then return 0 end
end
redis.call('HSET', KEYS[1], 'status', cjson.encode('queued'), 'worker', 'null')
return 1
"""

_FIELDS = (
    "id",
    "status",
    "spec",
    "progress",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "attempts",
    "cancel_requested",
    "worker",
    "heartbeat_at",
)


# What XREAD answers with decode_responses: (stream, [(entry id, fields)]) per stream.
StreamReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]
# The method JobStore.list hides the builtin inside the class body.
_Statuses = list[tuple[str, str | None]]
_Events = list[tuple[str, dict[str, Any]]]


def _decode(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw:
        return None
    record = {k: json.loads(v) for k, v in raw.items()}
    for field in _FIELDS:
        record.setdefault(field, None)
    return record


def new_job_id() -> str:
    return uuid.uuid4().hex


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
        self._transition = client.register_script(_TRANSITION)
        self._requeue_stale = client.register_script(_REQUEUE_STALE)

    @classmethod
    def from_url(cls, url: str, retry_for_s: float = 0.0) -> JobStore:
        """``retry_for_s`` > 0: retry operations that find Redis unreachable for that long."""
        return cls(redis.Redis.from_url(url, decode_responses=True), retry_for_s)

    # --- records -----------------------------------------------------------------------------

    @_retried
    def create(self, spec: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        job_id = job_id or new_job_id()
        now = time.time()
        record = {
            "id": job_id,
            "status": JobStatus.QUEUED.value,
            "spec": spec,
            "progress": {},
            "result": None,
            "error": None,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "attempts": 0,
            "cancel_requested": False,
        }
        pipe = self.redis.pipeline()
        pipe.hset(JOB_KEY.format(job_id), mapping={k: json.dumps(v) for k, v in record.items()})
        pipe.zadd(INDEX_KEY, {job_id: now})
        pipe.execute()
        self.append_event(job_id, "status", {"status": JobStatus.QUEUED.value})
        return record

    @_retried
    def get(self, job_id: str) -> dict[str, Any] | None:
        return _decode(cast(dict[str, str], self.redis.hgetall(JOB_KEY.format(job_id))))

    @_retried
    def list(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first. Returns (page, total matching); reads only the page's records."""
        if status is None:
            total = int(self.redis.zcard(INDEX_KEY))
            page_ids = cast(list[str], self.redis.zrevrange(INDEX_KEY, offset, offset + limit - 1))
        else:
            matching = [i for i, s in self.statuses() if s == status]
            total, page_ids = len(matching), matching[offset : offset + limit]
        pipe = self.redis.pipeline()
        for job_id in page_ids:
            pipe.hgetall(JOB_KEY.format(job_id))
        records = [r for r in map(_decode, pipe.execute()) if r is not None]
        return records, total

    @_retried
    def statuses(self) -> _Statuses:
        """(job id, status) of every job, newest first, without reading the whole records."""
        ids = cast(list[str], self.redis.zrevrange(INDEX_KEY, 0, -1))
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hget(JOB_KEY.format(job_id), "status")
        values: list[str | None] = pipe.execute()
        return [(i, json.loads(v) if v else None) for i, v in zip(ids, values, strict=True)]

    @_retried
    def set_fields(self, job_id: str, **fields: Any) -> None:
        self.redis.hset(
            JOB_KEY.format(job_id), mapping={k: json.dumps(v) for k, v in fields.items()}
        )

    @_retried
    def transition(self, job_id: str, status: JobStatus, **fields: Any) -> bool:
        """Move a non-terminal job to ``status``; returns False if it was already terminal."""
        args: list[str] = [status.value]
        for key, value in fields.items():
            args += [key, json.dumps(value)]
        applied = bool(self._transition(keys=[JOB_KEY.format(job_id)], args=args))
        if applied:
            event = {"status": status.value}
            event.update({k: fields[k] for k in ("result", "error") if k in fields})
            self.append_event(job_id, "status", event)
        return applied

    @_retried
    def mark_running(self, job_id: str, worker: str) -> bool:
        record = self.get(job_id)
        attempts = (record or {}).get("attempts") or 0
        now = time.time()
        return self.transition(
            job_id,
            JobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
            attempts=attempts + 1,
        )

    @_retried
    def heartbeat(self, job_id: str) -> None:
        self.set_fields(job_id, heartbeat_at=time.time())

    @_retried
    def requeue_if_stale(self, job_id: str, heartbeat_before: float, reason: str) -> bool:
        """Atomically move a running job whose heartbeat is older than ``heartbeat_before`` back
        to queued (its worker was lost); False when it is not running or is still alive."""
        applied = bool(
            self._requeue_stale(keys=[JOB_KEY.format(job_id)], args=[repr(heartbeat_before)])
        )
        if applied:
            self.append_event(
                job_id, "status", {"status": JobStatus.QUEUED.value, "reason": reason}
            )
        return applied

    @_retried
    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self.set_fields(job_id, progress=progress, heartbeat_at=time.time())
        self.append_event(job_id, "progress", progress)

    @_retried
    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        assert status.terminal
        return self.transition(job_id, status, result=result, error=error, finished_at=time.time())

    # --- cancellation ------------------------------------------------------------------------

    @_retried
    def request_cancel(self, job_id: str) -> dict[str, Any] | None:
        """Flag a job for cancellation; a queued job is cancelled at once."""
        record = self.get(job_id)
        if record is None:
            return None
        if JobStatus(record["status"]).terminal:
            return record
        self.set_fields(job_id, cancel_requested=True)
        if record["status"] == JobStatus.QUEUED.value:
            self.finish(job_id, JobStatus.CANCELLED, error="cancelled before it started")
        return self.get(job_id)

    @_retried
    def cancel_requested(self, job_id: str) -> bool:
        value = self.redis.hget(JOB_KEY.format(job_id), "cancel_requested")
        return bool(value and json.loads(value))

    # --- events ------------------------------------------------------------------------------

    @_retried
    def append_event(self, job_id: str, kind: str, data: dict[str, Any]) -> str:
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
    ) -> _Events:
        """Events after stream id ``after``; blocks up to ``block_ms`` when none are there yet."""
        reply = cast(
            StreamReply,
            self.redis.xread({EVENTS_KEY.format(job_id): after}, count=count, block=block_ms),
        )
        events: _Events = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                events.append(
                    (
                        entry_id,
                        {
                            "type": fields["type"],
                            "data": json.loads(fields["data"]),
                            "time": float(fields["time"]),
                        },
                    )
                )
        return events

    def ping(self) -> bool:
        return bool(self.redis.ping())
