"""Training-job records in Redis: the store the gateway reads and the worker writes.

The record layout is in :mod:`fdl.job_records`, the scripts that change records in
:mod:`fdl.job_scripts`, the reads in :mod:`fdl.job_reads`. Each status change, with its
``status`` event, is one Lua script: a terminal status is never overwritten, and a retry of a
change that applied but whose reply was lost changes nothing (a token per call); so does a
retried ``progress`` or ``log`` event, which is appended once (a token per event). Fields that a
running job updates (heartbeats, progress) are set only while its record exists: a late report
of a job whose record was pruned or lost writes nothing.

A store made with ``retry_for_s`` (the worker's) retries every operation while Redis is
unreachable, for at most that long: a Redis restart in the middle of a job pauses the job's
bookkeeping instead of failing it. The gateway's store does not retry: it answers 503 at once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, cast

import redis
from redis.commands.core import Script

from fdl.job_reads import JobReads
from fdl.job_records import (
    EVENTS_KEY,
    INDEX_KEY,
    JOB_KEY,
    RESEND_BACKOFF_CAP,
    TERMINAL,
    JobStatus,
    lost_outcomes,
    new_job_id,
    new_record,
    script_args,
)
from fdl.job_scripts import (
    CANCEL_SCRIPT,
    CLAIM_SCRIPT,
    CREATE_SCRIPT,
    PRUNE_LEFTOVER_SCRIPT,
    PRUNE_SCRIPT,
    RESEND_SCRIPT,
    SET_FIELDS_SCRIPT,
    SETTLE_LOST_SCRIPT,
    TRANSITION_SCRIPT,
)
from fdl.store_retry import retried as _retried

# What callers of the store use with it (the record layout itself is fdl.job_records').
__all__ = ["TERMINAL", "JobStatus", "JobStore", "new_job_id"]

# Jobs removed per round trip by JobStore.prune.
PRUNE_BATCH = 500
# Keys each SCAN step of JobStore.prune_leftovers looks at (a hint to Redis; one round trip).
LEFTOVER_SCAN_COUNT = 1000
_JOB_PREFIX = JOB_KEY.format("")
_EVENTS_SUFFIX = EVENTS_KEY.format("").removeprefix(_JOB_PREFIX)


class JobStore(JobReads):
    """Job records, their index and their event streams in one Redis.

    Args:
        client: a Redis client made with ``decode_responses=True`` (:meth:`from_url` makes one).
        retry_for_s: how long each operation retries while Redis is unreachable; 0 fails at once.

    Reads (:class:`fdl.job_reads.JobReads`) return plain dicts or ``None`` for an unknown job;
    status changes return whether they applied.
    """

    def __init__(self, client: redis.Redis, retry_for_s: float = 0.0) -> None:
        self.redis = client
        self.retry_for_s = retry_for_s
        self._local = threading.local()
        self._create = client.register_script(CREATE_SCRIPT)
        self._transition = client.register_script(TRANSITION_SCRIPT)
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._settle_lost = client.register_script(SETTLE_LOST_SCRIPT)
        self._set_fields = client.register_script(SET_FIELDS_SCRIPT)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self._resend = client.register_script(RESEND_SCRIPT)
        self._prune = client.register_script(PRUNE_SCRIPT)
        self._prune_leftover = client.register_script(PRUNE_LEFTOVER_SCRIPT)

    @classmethod
    def from_url(cls, url: str, retry_for_s: float = 0.0) -> JobStore:
        """A store on the Redis at ``url`` (a client that decodes responses); ``retry_for_s`` > 0
        retries operations that find Redis unreachable for that long."""
        return cls(redis.Redis.from_url(url, decode_responses=True), retry_for_s)

    @_retried
    def _run(self, script: Script, job_id: str, args: list[str], *keys: str) -> Any:
        """Run a script on the job (the token in a status script's ``args`` makes its retries
        safe); returns its reply."""
        job_keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), *keys]
        return script(keys=job_keys, args=args)

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

    def set_fields(self, job_id: str, **fields: Any) -> bool:
        """Set record fields (JSON-encoded) without touching the status or emitting an event;
        False (nothing written) when the job's record is gone or never existed."""
        return self._update(job_id, "", {}, fields) is not None

    def _update(
        self, job_id: str, kind: str, data: dict[str, Any], fields: dict[str, Any]
    ) -> str | None:
        """Set ``fields`` and append an event of ``kind`` ('' for none) with ``data``, in one
        step, only while the record exists; returns the event's id ('1' without one), or None
        when the record is gone. The event's token is made here, once: ``_run`` retries with the
        same one, so a retry of a write whose reply was lost does not append it again (no caller
        of this may itself be ``@_retried``, or its retry would make a new token)."""
        args = [kind, json.dumps(data), str(time.time()), uuid.uuid4().hex if kind else ""]
        for key, value in fields.items():
            args += [key, json.dumps(value)]
        reply = self._run(self._set_fields, job_id, args)
        return None if reply in (0, "0") else str(reply)

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
    def heartbeat(self, job_id: str) -> bool:
        """Record that the job's worker is alive (the reaper requeues jobs whose beat stops);
        False when its record is gone (nothing written)."""
        return self.set_fields(job_id, heartbeat_at=self.now())

    def settle_lost(
        self,
        job_id: str,
        heartbeat_before: float,
        attempts: int,
        reason: str,
        published: dict[str, Any] | None = None,
        give_up: str | None = None,
    ) -> str | None:
        """Decide, in one atomic step, what becomes of a running job whose worker was lost: its
        heartbeat is older than ``heartbeat_before`` (epoch seconds) and it still counts
        ``attempts`` (those the caller saw). It ends ``succeeded`` with ``published`` (what an
        earlier run of it published) when given, else ``cancelled`` when its cancellation was
        requested, else ``failed`` with the error ``give_up`` when given (it is out of
        attempts), else goes back to ``queued`` (the caller sends its message again).
        ``reason``: why its worker counts as lost, for the event or the error.

        Returns:
            The status the job was left in, or None when nothing changed (it beat again, ended,
            or was claimed again; another reaper took it).
        """
        now = self.now()
        event = {"status": JobStatus.QUEUED.value, "reason": reason}
        outcomes = lost_outcomes(reason, now, published, give_up)
        args = script_args(event, repr(heartbeat_before), str(attempts), outcomes)
        reply = self._run(self._settle_lost, job_id, args)
        return str(reply) if reply else None

    def mark_resent(self, job_id: str, after_s: float) -> bool:
        """True (and the job marked sent now) when it is still queued and its message is due to
        be sent again (``after_s`` after the last send, doubling with each resend): the caller
        sends it again (one caller per period)."""
        token = json.dumps(uuid.uuid4().hex)  # a retry whose first try marked it still sends
        args = [repr(after_s), repr(self.now()), str(RESEND_BACKOFF_CAP), token]
        return bool(self._run(self._resend, job_id, args))

    @_retried
    def prune(self, ended_before: float) -> list[str]:
        """Remove the records, events and index entries of jobs that ended before
        ``ended_before`` (epoch seconds, Redis's clock); returns their ids. Only jobs created
        before it are looked at (a job ends after it is created), in batches that other clients'
        commands interleave with (no transaction)."""
        old = cast(list[str], self.redis.zrangebyscore(INDEX_KEY, "-inf", f"({ended_before!r}"))
        pruned: list[str] = []
        for start in range(0, len(old), PRUNE_BATCH):
            batch = old[start : start + PRUNE_BATCH]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in batch:
                keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), INDEX_KEY]
                self._prune(keys=keys, args=[repr(ended_before), job_id], client=pipe)
            pruned += [job_id for job_id, done in zip(batch, pipe.execute(), strict=True) if done]
        return pruned

    @_retried
    def prune_leftovers(self, before: float) -> list[str]:
        """Remove what workers older than the record-existence check left after a job's record
        was pruned, older than ``before`` (epoch seconds, Redis's clock): hashes of only
        heartbeat or progress fields and event streams without a record, which no index entry
        names (one script per job id, :data:`fdl.job_scripts.PRUNE_LEFTOVER_SCRIPT`). Found with
        SCAN (``LEFTOVER_SCAN_COUNT`` keys a step, never KEYS), so it costs one pass over Redis's
        keys; returns the job ids removed."""
        removed: list[str] = []
        cursor = 0
        while True:
            cursor, keys = self.redis.scan(cursor, f"{_JOB_PREFIX}*", LEFTOVER_SCAN_COUNT)
            found = cast(list[str], keys)
            ids = sorted({k.removeprefix(_JOB_PREFIX).removesuffix(_EVENTS_SUFFIX) for k in found})
            now = repr(self.now())
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                job_keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), INDEX_KEY]
                self._prune_leftover(keys=job_keys, args=[repr(before), job_id, now], client=pipe)
            removed += [job_id for job_id, done in zip(ids, pipe.execute(), strict=True) if done]
            if cursor == 0:
                return removed

    def update_progress(self, job_id: str, progress: dict[str, Any]) -> bool:
        """Store the job's progress (it counts as a heartbeat) and emit a ``progress`` event, in
        one step, once also when retried; False when its record is gone (nothing written)."""
        fields = {"progress": progress, "heartbeat_at": self.now()}
        return self._update(job_id, "progress", progress, fields) is not None

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

    # --- events ------------------------------------------------------------------------------

    def append_event(self, job_id: str, kind: str, data: dict[str, Any]) -> str | None:
        """Append an event of ``kind`` (``status``, ``progress``, ``log``…) with the JSON-ready
        ``data`` to the job's stream (capped at about ``EVENTS_MAXLEN`` entries); returns the
        stream entry's id, or None when the job's record is gone (no stream is left behind). A
        retry after a lost reply appends nothing and returns the first try's id."""
        return self._update(job_id, kind, data, {})
