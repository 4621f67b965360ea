"""What a training-job record is in Redis: its keys, statuses, fields, and the Lua scripts that
change its status atomically (:class:`fdl.jobs.JobStore` runs them).

One hash per job (``fdl:job:<id>``) holds JSON-encoded fields, a sorted set indexes jobs by
creation time, and a Redis stream per job carries the events that live consumers follow.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any

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
TRANSITION_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return 0 end
current = cjson.decode(current)
if TERMINAL_STATUSES then return 0 end
redis.call('HSET', KEYS[1], 'status', cjson.encode(ARGV[1]))
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
""".replace(
    "TERMINAL_STATUSES", " or ".join(f"current == '{status}'" for status in sorted(TERMINAL))
)

# KEYS[1] job hash; ARGV[1] heartbeat threshold (epoch seconds). A running job whose heartbeat is
# older goes back to queued (its worker died). Returns 1 when applied.
REQUEUE_STALE_SCRIPT = """
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

FIELDS = (
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
# A job's events as the store returns them: (entry id, {"type", "data", "time"}).
Events = list[tuple[str, dict[str, Any]]]


def decode_record(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw:
        return None
    record = {k: json.loads(v) for k, v in raw.items()}
    for field in FIELDS:
        record.setdefault(field, None)
    return record


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_record(job_id: str, spec: dict[str, Any], now: float) -> dict[str, Any]:
    """A queued job's record, created at ``now`` (epoch seconds)."""
    return {
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


def decode_events(reply: StreamReply | None) -> Events:
    """A job's events from an XREAD reply: ``(entry id, {"type", "data", "time"})``."""
    return [
        (
            entry_id,
            {
                "type": fields["type"],
                "data": json.loads(fields["data"]),
                "time": float(fields["time"]),
            },
        )
        for _stream, entries in reply or []
        for entry_id, fields in entries
    ]
