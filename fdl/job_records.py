"""What a training-job record is in Redis: its keys, statuses, fields, and the Lua scripts that
change its status atomically (:class:`fdl.jobs.JobStore` runs them).

One hash per job (``fdl:job:<id>``) holds JSON-encoded fields, a sorted set indexes jobs by
creation time, and a Redis stream per job carries the events that live consumers follow.
"""

from __future__ import annotations

import json
import time
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

# Lua: whether status ``s`` is terminal.
_TERMINAL_TEST = " or ".join(f"s == '{status}'" for status in sorted(TERMINAL))

# Every status change runs as one Lua script that also appends the ``status`` event, so a change
# and its event are never separated. Each call carries a token of its own (ARGV[1], a
# JSON-encoded uuid) that the script stores in ``op_token`` when it applies: a retry of the same
# call (fdl.store_retry, or redis-py's own, after the script ran but its reply was lost) finds
# its token there and answers "applied" again without changing anything. Any later status
# change overwrites the token, so a retry after someone else's change is judged afresh.
#
# Common arguments: KEYS[1] job hash, KEYS[2] events stream; ARGV[1] token, ARGV[2] the event's
# data (JSON), ARGV[3] the event's time; then each script's own.
_PRELUDE = """
local key, stream, token = KEYS[1], KEYS[2], ARGV[1]
local function replayed() return redis.call('HGET', key, 'op_token') == token end
local function status()
  local raw = redis.call('HGET', key, 'status')
  if not raw then return nil end
  return cjson.decode(raw)
end
local function is_terminal(s) return TERMINAL_TEST end
local function number(field)
  local raw = redis.call('HGET', key, field)
  if not raw then return nil end
  local value = cjson.decode(raw)
  if type(value) == 'number' then return value end
  return nil
end
local function set_pairs(first)
  for i = first, #ARGV, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
local function changed()
  redis.call('HSET', key, 'op_token', token)
  redis.call('XADD', stream, 'MAXLEN', '~', 'EVENTS_MAXLEN', '*',
             'type', 'status', 'data', ARGV[2], 'time', ARGV[3])
end
""".replace("TERMINAL_TEST", _TERMINAL_TEST).replace("EVENTS_MAXLEN", str(EVENTS_MAXLEN))

# KEYS[3] the index; ARGV[4] creation time, ARGV[5] job id, ARGV[6..] field/value pairs (JSON).
# Writes the record, indexes it and emits ``queued``. Returns 1 (also on a replay).
CREATE_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
set_pairs(6)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
changed()
return 1
"""
)

# ARGV[4..] field/value pairs (JSON), the new status among them. Returns 1 when applied, 0 when
# the job is missing or already terminal.
TRANSITION_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
local current = status()
if not current or is_terminal(current) then return 0 end
set_pairs(4)
changed()
return 1
"""
)

# The claim of an attempt. ARGV[4] heartbeat threshold (epoch seconds), ARGV[5..] field/value
# pairs (JSON) set with status running. A queued job is claimed; a running one only when its
# heartbeat (else its start) is older than the threshold (its worker was lost). Counts the
# attempt. Returns 1 when claimed, 0 otherwise (missing, terminal, or running elsewhere).
CLAIM_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
local current = status()
if current == 'running' then
  local beat = number('heartbeat_at') or number('started_at')
  if beat and beat >= tonumber(ARGV[4]) then return 0 end
elseif current ~= 'queued' then
  return 0
end
set_pairs(5)
redis.call('HSET', key, 'status', cjson.encode('running'),
           'attempts', tostring((number('attempts') or 0) + 1))
changed()
return 1
"""
)

# ARGV[4] heartbeat threshold (epoch seconds), ARGV[5..] field/value pairs (JSON) set with it. A
# running job whose heartbeat is older goes back to queued (its worker died). Returns 1 when
# applied.
REQUEUE_STALE_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 1 end
if status() ~= 'running' then return 0 end
local beat = number('heartbeat_at')
if beat and beat >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', key, 'status', cjson.encode('queued'), 'worker', 'null')
set_pairs(5)
changed()
return 1
"""
)

# A queued job's message is sent again after FDL_RESEND_QUEUED_AFTER_S, then after twice that,
# four times, ... up to this power of two (32: 5 h 20 min with the default 10 min), so a job that
# only waits behind a long backlog collects a few duplicate messages, not one per period.
RESEND_BACKOFF_CAP = 5

# KEYS[1] job hash; ARGV[1] the first resend period (s), ARGV[2] now (epoch seconds), ARGV[3] the
# cap on its doublings. A job still queued whose message was last sent (else the job created) a
# period ago is marked sent now and its resend count grows: one reaper re-sends it. Returns 1
# when marked.
RESEND_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'status')
if not raw or cjson.decode(raw) ~= 'queued' then return 0 end
local resends = redis.call('HGET', KEYS[1], 'resends')
resends = resends and tonumber(cjson.decode(resends)) or 0
local period = tonumber(ARGV[1]) * 2 ^ math.min(resends, tonumber(ARGV[3]))
local sent = redis.call('HGET', KEYS[1], 'sent_at') or redis.call('HGET', KEYS[1], 'created_at')
if sent then
  sent = cjson.decode(sent)
  if type(sent) == 'number' and sent + period > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'sent_at', cjson.encode(tonumber(ARGV[2])),
  'resends', cjson.encode(resends + 1))
return 1
"""


def resend_due(record: dict[str, Any], after_s: float) -> float:
    """When a queued job's message is next sent again (epoch seconds; RESEND_SCRIPT's rule)."""
    sent = float(record.get("sent_at") or record.get("created_at") or 0)
    resends = int(record.get("resends") or 0)
    return sent + after_s * float(2 ** min(resends, RESEND_BACKOFF_CAP))


# ARGV[4..] field/value pairs (JSON) set when a queued job is cancelled. Flags a job that is not
# terminal for cancellation; only a job still queued is cancelled at once (its worker, if a
# message reaches one, then finds it terminal). Returns -1 for a missing job, 0 when it is
# terminal, 1 when only flagged, 2 when cancelled.
CANCEL_SCRIPT = (
    _PRELUDE
    + """
if replayed() then return 2 end
local current = status()
if not current then return -1 end
if is_terminal(current) then return 0 end
redis.call('HSET', key, 'cancel_requested', 'true')
if current ~= 'queued' then return 1 end
redis.call('HSET', key, 'status', cjson.encode('cancelled'))
set_pairs(4)
changed()
return 2
"""
)

# KEYS[1] job hash, KEYS[2] events stream, KEYS[3] the index; ARGV[1] cut-off (epoch seconds),
# ARGV[2] job id. A job that ended (else was created) before the cut-off loses its record, its
# events and its index entry; an index entry whose record is gone goes too. Returns 1 when removed.
PRUNE_SCRIPT = """
local raw = redis.call('HGET', KEYS[1], 'status')
if raw then
  local s = cjson.decode(raw)
  if not (TERMINAL_TEST) then return 0 end
  local ended = redis.call('HGET', KEYS[1], 'finished_at')
  ended = ended or redis.call('HGET', KEYS[1], 'created_at')
  ended = ended and cjson.decode(ended)
  if type(ended) ~= 'number' or ended >= tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
""".replace("TERMINAL_TEST", _TERMINAL_TEST)

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
    "op_token",
    "sent_at",
    "resends",
    "queue",
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


def new_record(
    job_id: str, spec: dict[str, Any], now: float, queue: str | None = None
) -> dict[str, Any]:
    """A queued job's record, created at ``now`` (epoch seconds), sent to ``queue``."""
    return {
        "id": job_id,
        "queue": queue,
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


def script_args(event: dict[str, Any], *own: str, **fields: Any) -> list[str]:
    """A status script's arguments: a new token, the event's data and time, the script's own
    arguments, then ``fields`` as JSON-encoded field/value pairs. Made once per call, so every
    retry of the call sends the same token."""
    args = [json.dumps(uuid.uuid4().hex), json.dumps(event), str(time.time()), *own]
    for key, value in fields.items():
        args += [key, json.dumps(value)]
    return args


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
