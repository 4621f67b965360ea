"""What a training-job record is in Redis: its keys, statuses and fields, and the arguments of
the Lua scripts (:mod:`fdl.job_scripts`) that change it atomically (:class:`fdl.jobs.JobStore`
runs them).

One hash per job (``fdl:job:<id>``) holds JSON-encoded fields, a sorted set indexes jobs by
creation time, a Redis stream per job carries the events that live consumers follow, and a set
per queue (``fdl:queued:<queue>``) holds the jobs that may wait in it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from enum import StrEnum
from typing import Any

JOB_KEY = "fdl:job:{}"
EVENTS_KEY = "fdl:job:{}:events"
INDEX_KEY = "fdl:jobs"
EVENTS_MAXLEN = 10_000
# A set per queue of the ids of its jobs that may be queued: every status change that leaves a
# job queued adds it to its queue's set, and every other drops it, in the same script
# (fdl.job_status_scripts.PRELUDE's ``track``). The count of the jobs waiting in a queue
# (JobStore.waiting, the queue cap's) reads only its members' records, dropping those no longer
# queued there (ended, claimed, pruned, deleted). QUEUED_BUILT, a member that no job id can be
# (JOB_ID_PATTERN), says the set holds every queued job of the queue: a store written before
# these sets (or a set lost on its own) has none, and its first count builds the set from one
# scan of every record (JobStore.waiting).
QUEUED_KEY = "fdl:queued:{}"
QUEUED_BUILT = ":built"


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


class NotThisRun(Exception):
    """The job's record no longer shows this run running it (it ended, or another run claimed it
    while this one went unheard): this run publishes nothing and leaves the record alone. Raised
    by a run's own write that the record refused (:meth:`fdl.jobs.JobStore.heartbeat` and the
    others given ``run``), and by the run's checks of the record (:mod:`training.job`)."""


# A queued job's message is sent again after FDL_RESEND_QUEUED_AFTER_S, then after twice that,
# four times, ... up to this power of two (32: 5 h 20 min with the default 10 min), so a job that
# only waits behind a long backlog collects a few duplicate messages, not one per period.
RESEND_BACKOFF_CAP = 5

# The error of a job whose message the gateway never confirmed sent (``enqueued`` still false)
# and that is still queued when its message would be sent again: the resend script ends it
# instead (:data:`fdl.job_scripts.RESEND_SCRIPT`), since its client was most likely answered 503
# and may have submitted it again.
NOT_CONFIRMED = (
    "the job could not be queued: its message was never confirmed sent (its submission was most "
    "likely refused with 503) and no worker took it; it was not sent again"
)


def resend_due(record: dict[str, Any], after_s: float) -> float:
    """When a queued job's message is next sent again (epoch seconds; the resend script's rule,
    :data:`fdl.job_scripts.RESEND_SCRIPT`)."""
    sent = float(record.get("sent_at") or record.get("created_at") or 0)
    resends = int(record.get("resends") or 0)
    return sent + after_s * float(2 ** min(resends, RESEND_BACKOFF_CAP))


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
    "attempts",  # runs counted toward FDL_MAX_ATTEMPTS (a run handed back is not)
    "handed_back",  # runs handed back by a stopping worker (training/worker_stop.py)
    "cancel_requested",
    "worker",
    "heartbeat_at",
    "op_token",
    "event_token",  # [token, stream id] of the last event appended (a retry appends nothing)
    "resend_token",
    "sent_at",
    "resends",
    "queue",
    "enqueued",  # false until the gateway confirms the message sent; absent: sent (older gateways)
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


# A job id as routes take it (a new one is 32 hex digits): what a URL, a log line or a folder
# name may carry; api.schemas.JobId, listings and the reaper's TensorBoard folders check it.
JOB_ID_PATTERN = r"[A-Za-z0-9_\-]{1,64}"
JOB_ID = re.compile(JOB_ID_PATTERN)


def new_job_id() -> str:
    return uuid.uuid4().hex


def new_record(
    job_id: str,
    spec: dict[str, Any],
    now: float,
    queue: str | None = None,
    unconfirmed: bool = False,
) -> dict[str, Any]:
    """A queued job's record, created at ``now`` (epoch seconds), sent to ``queue``;
    ``unconfirmed``: marked ``enqueued: false`` until its sender confirms the message sent."""
    record: dict[str, Any] = {
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
        "handed_back": 0,
        "cancel_requested": False,
    }
    if unconfirmed:
        record["enqueued"] = False
    return record


def script_args(event: dict[str, Any], *own: str, **fields: Any) -> list[str]:
    """A status script's arguments: a new token, the event's data and time, the script's own
    arguments, then ``fields`` as JSON-encoded field/value pairs. Made once per call, so every
    retry of the call sends the same token."""
    args = [json.dumps(uuid.uuid4().hex), json.dumps(event), str(time.time()), *own]
    for key, value in fields.items():
        args += [key, json.dumps(value)]
    return args


def _outcome(event: dict[str, Any], **fields: Any) -> list[Any]:
    """One outcome of a settling script (lost runs', hand-backs'): [event data, {field: JSON}]."""
    return [json.dumps(event), {k: json.dumps(v) for k, v in fields.items()}]


def _ended(
    status: JobStatus, result: dict[str, Any] | None, error: str | None, now: float
) -> list[Any]:
    event = {"status": status.value, "result": result, "error": error}
    return _outcome(event, status=status.value, result=result, error=error, finished_at=now)


def _queued_again(reason: str, now: float, **event: Any) -> list[Any]:
    queued = JobStatus.QUEUED.value
    return _outcome(
        {"status": queued, "reason": reason, **event},
        status=queued,
        worker=None,
        sent_at=now,
        resends=0,
        enqueued=True,  # its sender sends it itself: resent if lost, never ended unconfirmed
    )


def lost_outcomes(
    reason: str, now: float, published: dict[str, Any] | None, give_up: str | None
) -> str:
    """What may become of a running job whose worker was lost, as the settling script takes
    them (JSON: status -> [event data, {field: JSON value}]): queued again, or ended at ``now``
    (epoch seconds) ``cancelled`` (when its cancellation was requested), ``succeeded`` with
    ``published`` (the version an earlier run of it published), ``failed`` with ``give_up``
    (the error, when it is out of attempts). ``reason``: why its worker counts as lost."""
    outcomes = {
        JobStatus.QUEUED.value: _queued_again(reason, now),
        JobStatus.CANCELLED.value: _ended(
            JobStatus.CANCELLED, None, f"cancelled by request ({reason})", now
        ),
    }
    if published is not None:
        outcomes[JobStatus.SUCCEEDED.value] = _ended(JobStatus.SUCCEEDED, published, None, now)
    if give_up is not None:
        outcomes[JobStatus.FAILED.value] = _ended(JobStatus.FAILED, None, give_up, now)
    return json.dumps(outcomes)


# The outcome of a hand-back past FDL_MAX_HAND_BACKS that counts its run (still queued).
COUNTED = "counted"


def hand_back_outcomes(reason: str, counted: str, give_up: str, now: float) -> str:
    """What may become of a job that its run hands back (its worker stopping), as the hand-back
    script takes them (as :func:`lost_outcomes`): queued again with ``reason`` (its run not
    counted) or, past the hand-backs allowed, with ``counted`` (:data:`COUNTED`: its run
    counted), or ended at ``now`` ``failed`` with ``give_up`` (counted, out of attempts) or
    ``cancelled`` (its cancellation requested). Each queued event says ``handed_back``."""
    outcomes = {
        JobStatus.QUEUED.value: _queued_again(reason, now, handed_back=True),
        COUNTED: _queued_again(counted, now, handed_back=True),
        JobStatus.FAILED.value: _ended(JobStatus.FAILED, None, give_up, now),
        JobStatus.CANCELLED.value: _ended(JobStatus.CANCELLED, None, "cancelled by request", now),
    }
    return json.dumps(outcomes)


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
