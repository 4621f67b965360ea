"""Training-job records in Redis: the store the gateway reads and the worker writes.

The record layout is in :mod:`fdl.job_records`, the scripts that change records in
:mod:`fdl.job_scripts`, the reads in :mod:`fdl.job_reads`, a run's writes in
:mod:`fdl.job_runs`. Each status change, with its
``status`` event, is one Lua script: a terminal status is never overwritten, and a retry of a
change that applied but whose reply was lost changes nothing (a token per call); so does a
retried ``progress`` or ``log`` event, which is appended once (a token per event). Fields that a
running job updates (heartbeats, progress) are set only while its record exists: a late report
of a job whose record was pruned or lost writes nothing, and a run's own write (given ``run``),
its end included, only while the record runs under that run's name: a run that lost its job
writes nothing more.

A store made with ``retry_for_s`` (the worker's) retries every operation while Redis is
unreachable or refuses writes at its ``maxmemory`` (:mod:`fdl.store_retry`), for at most that
long: a Redis restart in the middle of a job pauses the job's bookkeeping instead of failing
it. The gateway's store does not retry: it answers 503 at once.
"""

from __future__ import annotations

import json
import threading
from typing import Any, cast

import redis

from fdl.job_records import (
    EVENTS_KEY,
    INDEX_KEY,
    JOB_KEY,
    NOT_CONFIRMED,
    QUEUED_BUILT,
    QUEUED_KEY,
    RESEND_BACKOFF_CAP,
    TERMINAL,
    JobStatus,
    NotThisRun,
    lost_outcomes,
    new_job_id,
    new_record,
    script_args,
)
from fdl.job_runs import JobRuns
from fdl.job_scripts import (
    CANCEL_SCRIPT,
    CLAIM_SCRIPT,
    CONFIRM_SCRIPT,
    COUNT_QUEUED_SCRIPT,
    CREATE_SCRIPT,
    PRUNE_LEFTOVER_SCRIPT,
    PRUNE_SCRIPT,
    RESEND_SCRIPT,
    SET_FIELDS_SCRIPT,
    SETTLE_LOST_SCRIPT,
    TRANSITION_SCRIPT,
)
from fdl.job_status_scripts import HAND_BACK_SCRIPT
from fdl.store_retry import retried as _retried

# What callers of the store use with it (the record layout itself is fdl.job_records').
__all__ = ["TERMINAL", "JobStatus", "JobStore", "NotThisRun", "new_job_id"]

# Jobs removed per round trip by JobStore.prune.
PRUNE_BATCH = 500
# Keys each SCAN step of JobStore.prune_leftovers looks at (a hint to Redis; one round trip).
LEFTOVER_SCAN_COUNT = 1000
_JOB_PREFIX = JOB_KEY.format("")
_EVENTS_SUFFIX = EVENTS_KEY.format("").removeprefix(_JOB_PREFIX)


class JobStore(JobRuns):
    """Job records, their index and their event streams in one Redis.

    Args:
        client: a Redis client made with ``decode_responses=True`` (:meth:`from_url` makes one).
        retry_for_s: how long each operation retries while Redis is unreachable (or out of
            memory); 0 fails at once.

    Reads (:class:`fdl.job_reads.JobReads`) return plain dicts or ``None`` for an unknown job;
    status changes return whether they applied. A run's writes, its end among them, are
    :class:`fdl.job_runs.JobRuns`'.
    """

    def __init__(self, client: redis.Redis, retry_for_s: float = 0.0) -> None:
        self.redis = client
        self.retry_for_s = retry_for_s
        self._local = threading.local()
        self._create = client.register_script(CREATE_SCRIPT)
        self._transition = client.register_script(TRANSITION_SCRIPT)
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._settle_lost = client.register_script(SETTLE_LOST_SCRIPT)
        self._hand_back = client.register_script(HAND_BACK_SCRIPT)
        self._set_fields = client.register_script(SET_FIELDS_SCRIPT)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self._resend = client.register_script(RESEND_SCRIPT)
        self._confirm = client.register_script(CONFIRM_SCRIPT)
        self._prune = client.register_script(PRUNE_SCRIPT)
        self._prune_leftover = client.register_script(PRUNE_LEFTOVER_SCRIPT)
        self._count_queued = client.register_script(COUNT_QUEUED_SCRIPT)

    @classmethod
    def from_url(cls, url: str, retry_for_s: float = 0.0) -> JobStore:
        """A store on the Redis at ``url`` (a client that decodes responses); ``retry_for_s`` > 0
        retries operations that find Redis unreachable for that long."""
        return cls(redis.Redis.from_url(url, decode_responses=True), retry_for_s)

    # --- records -----------------------------------------------------------------------------

    def create(
        self,
        spec: dict[str, Any],
        job_id: str | None = None,
        queue: str | None = None,
        unconfirmed: bool = False,
    ) -> dict[str, Any]:
        """Record a new queued job and index it; returns the record as stored. ``spec``: the
        validated job spec as JSON-ready data; ``job_id``: the gateway's (sent with the Celery
        task), default a new one; ``queue``: the Celery queue its message goes to (a reaper of
        that queue's workers re-sends a message that was lost); ``unconfirmed``: its message is
        not sent yet, and is re-sent only once :meth:`confirm_sent` says it was (else the reaper
        ends the job, :meth:`resend_or_end`)."""
        job_id = job_id or new_job_id()
        now = self.now()
        record = new_record(job_id, spec, now, queue, unconfirmed)
        event = {"status": JobStatus.QUEUED.value}
        self._run(self._create, job_id, script_args(event, repr(now), job_id, **record), INDEX_KEY)
        return record

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
        """True when :meth:`resend_or_end` marked the job's message to be sent again now."""
        return self.resend_or_end(job_id, after_s) == "resent"

    def resend_or_end(self, job_id: str, after_s: float) -> str:
        """What becomes of a queued job whose message is due to be sent again (``after_s`` after
        the last send, doubling with each resend), in one atomic step: ``"resent"``, marked sent
        now (the caller sends it again; one caller per period), or ``"failed"`` when a message
        was never confirmed sent (:meth:`confirm_sent`), ended with :data:`NOT_CONFIRMED` and
        sent nothing; ``""`` when it is not queued or not due. A retry whose first try applied
        (its token) answers the same."""
        now = self.now()
        failed = JobStatus.FAILED.value
        event = {"status": failed, "result": None, "error": NOT_CONFIRMED}
        ended = {"status": failed, "result": None, "error": NOT_CONFIRMED, "finished_at": now}
        args = script_args(event, repr(after_s), repr(now), str(RESEND_BACKOFF_CAP), **ended)
        return {1: "resent", 2: "failed"}.get(int(self._run(self._resend, job_id, args)), "")

    def confirm_sent(self, job_id: str) -> bool | None:
        """Record that the message of a job created ``unconfirmed`` was sent: True when
        confirmed (also again, or for a record that never waited for it), False when the reaper
        had ended the job for want of it first (a worker skips the message), None when the
        record is gone. Safe to retry."""
        reply = int(self._run(self._confirm, job_id, [json.dumps(NOT_CONFIRMED)]))
        return None if reply < 0 else reply == 1

    @_retried
    def waiting(self, queue: str, up_to: int | None = None) -> int:
        """How many jobs of ``queue`` are still queued (records, so a job whose message a reaper
        sent again counts once), exact, never from a cache: the queue cap counts on it; with
        ``up_to``, ``up_to`` once that many are found (a cap needs to know no more, and the
        count's script holds up every other client of the Redis while it runs). Reads
        the records of the queue's set of jobs that may be queued (QUEUED_KEY), in one script
        that drops the members no longer queued there (:data:`COUNT_QUEUED_SCRIPT`): O(jobs
        queued), whatever the number of records kept. A set without QUEUED_BUILT (a store
        written before these sets) is built first from one scan of every record
        (:meth:`_build_queued`), once."""
        keys = [QUEUED_KEY.format(queue)]
        args = [json.dumps(JobStatus.QUEUED.value), json.dumps(queue), up_to or ""]
        count = int(self._count_queued(keys=keys, args=args))
        if count < 0:
            self._build_queued(queue)
            count = int(self._count_queued(keys=keys, args=args))
        return count

    @_retried
    def track_queued(self, queue: str, job_ids: list[str]) -> None:
        """Add jobs read queued in ``queue`` to its set (the reaper's pass, for the jobs that
        processes of the previous version queued without it): never wrong, since the count
        checks every member's record."""
        if job_ids:
            self.redis.sadd(QUEUED_KEY.format(queue), *job_ids)

    def _build_queued(self, queue: str) -> None:
        """Put every job of ``queue`` that a scan of every record (:meth:`_scan`) finds queued
        in its set, with QUEUED_BUILT, in one SADD. Exact without a transaction, since every
        status change keeps the set itself meanwhile: a job queued when the SADD runs was either
        queued when the scan read it, or queued since by a script that added it (a job that left
        the queue since it was read is a member that the count drops)."""
        wanted = [json.dumps(JobStatus.QUEUED.value), json.dumps(queue)]
        ids = [job_id for job_id, values in self._scan("status", "queue") if values == wanted]
        self.redis.sadd(QUEUED_KEY.format(queue), QUEUED_BUILT, *ids)

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
