"""The writes that a job's run makes to its record, the half of :class:`fdl.jobs.JobStore` a
worker uses while it runs a job: heartbeats, progress, events, fields, and the status change
that ends the job (the store adds the records' creation, claims, cancellation and upkeep).

Each takes the writing run's worker name (``run``, the name it claimed the job under) and then
applies only while the record is ``running`` under that name, else writes nothing and raises
:class:`NotThisRun`: a run that lost its job (another run claimed it while this one went
unheard, finished it, or a reaper queued it again) never writes into it, its end included. A
write of no run (the gateway's, a reaper's) is not checked.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.commands.core import Script

from fdl.job_reads import JobReads
from fdl.job_records import (
    COUNTED,
    EVENTS_KEY,
    JOB_KEY,
    JobStatus,
    NotThisRun,
    hand_back_outcomes,
    script_args,
)
from fdl.store_retry import retried as _retried

# A script's answer that the record is not the writing run's (SET_FIELDS/TRANSITION_SCRIPT).
_NOT_THIS_RUN = (-1, "-1")
# TRANSITION_SCRIPT's answer that the end ``succeeded`` was applied as ``cancelled``.
_ENDED_CANCELLED = (2, "2")


class JobRuns(JobReads):
    """A job's run's writes; :class:`fdl.jobs.JobStore` registers the scripts and adds the rest."""

    _set_fields: Script
    _transition: Script
    _hand_back: Script

    @_retried
    def _run(self, script: Script, job_id: str, args: list[str], *keys: str) -> Any:
        """Run a script on the job (the token in a status script's ``args`` makes its retries
        safe); returns its reply."""
        job_keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id), *keys]
        return script(keys=job_keys, args=args)

    def set_fields(self, job_id: str, *, run: str | None = None, **fields: Any) -> bool:
        """Set record fields (JSON-encoded) without touching the status or emitting an event;
        False (nothing written) when the job's record is gone or never existed. ``run``: the
        worker name of the run that writes (its claim's); only while the record is running under
        it, else nothing is written and :class:`NotThisRun` is raised."""
        return self._update(job_id, "", {}, fields, run) is not None

    def _update(
        self,
        job_id: str,
        kind: str,
        data: dict[str, Any],
        fields: dict[str, Any],
        run: str | None = None,
    ) -> str | None:
        """Set ``fields`` and append an event of ``kind`` ('' for none) with ``data``, in one
        step, only while the record exists (and, with ``run``, runs under that worker name, else
        :class:`NotThisRun`); returns the event's id ('1' without one), or None when the record
        is gone. The event's token is made here, once: ``_run`` retries with the same one, so a
        retry of a write whose reply was lost does not append it again (no caller of this may
        itself be ``@_retried``, or its retry would make a new token)."""
        token = uuid.uuid4().hex if kind else ""
        args = [kind, json.dumps(data), str(time.time()), token, run or ""]
        for key, value in fields.items():
            args += [key, json.dumps(value)]
        reply = self._run(self._set_fields, job_id, args)
        if reply in _NOT_THIS_RUN:
            raise NotThisRun(f"job {job_id} no longer runs under {run}; nothing written")
        return None if reply in (0, "0") else str(reply)

    @_retried
    def heartbeat(self, job_id: str, run: str | None = None) -> bool:
        """Record that the job's worker is alive (the reaper requeues jobs whose beat stops);
        False when its record is gone (nothing written); with ``run`` (:meth:`set_fields`),
        :class:`NotThisRun` when the job is no longer that run's."""
        return self.set_fields(job_id, run=run, heartbeat_at=self.now())

    def update_progress(
        self, job_id: str, progress: dict[str, Any], run: str | None = None
    ) -> bool:
        """Store the job's progress (it counts as a heartbeat) and emit a ``progress`` event, in
        one step, once also when retried; False when its record is gone (nothing written); with
        ``run`` (:meth:`set_fields`), :class:`NotThisRun` when the job is no longer that run's."""
        fields = {"progress": progress, "heartbeat_at": self.now()}
        return self._update(job_id, "progress", progress, fields, run) is not None

    def append_event(
        self,
        job_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        retry: bool = True,
        run: str | None = None,
    ) -> str | None:
        """Append an event of ``kind`` (``status``, ``progress``, ``log``…) with the JSON-ready
        ``data`` to the job's stream (capped at about ``EVENTS_MAXLEN`` entries); returns the
        stream entry's id, or None when the job's record is gone (no stream is left behind). A
        retry after a lost reply appends nothing and returns the first try's id. ``retry=False``:
        one attempt whatever ``retry_for_s``, its Redis error raised at once (a best-effort note
        that must not wait out an outage). ``run`` (:meth:`set_fields`): :class:`NotThisRun`,
        nothing appended, when the job is no longer that run's."""
        if retry:
            return self._update(job_id, kind, data, {}, run)
        outer = getattr(self._local, "retrying", False)
        self._local.retrying = True  # as inside a retried operation: nothing in it retries
        try:
            return self._update(job_id, kind, data, {}, run)
        finally:
            self._local.retrying = outer

    def transition(
        self, job_id: str, status: JobStatus, *, run: str | None = None, **fields: Any
    ) -> bool:
        """Move a non-terminal job to ``status`` and emit a ``status`` event, setting ``fields``
        in the same atomic step (``result`` and ``error`` also go into the event); False when
        the job is unknown or already terminal (nothing changed). ``run``: the worker name of
        the run that changes it (its claim's); only while the record is running under it, else
        nothing changes and :class:`NotThisRun` is raised. A retry of a change that applied but
        whose reply was lost answers True, also once the record no longer runs under ``run``."""
        return self._change(job_id, status, run, fields) is not None

    def _change(
        self, job_id: str, status: JobStatus, run: str | None, fields: dict[str, Any]
    ) -> JobStatus | None:
        """:meth:`transition`'s change: the status the job was left in (``cancelled`` where
        an end ``succeeded`` that published nothing met a requested cancel), None when nothing
        changed; a retry whose first try's reply was lost answers as that try did."""
        event: dict[str, Any] = {"status": status.value}
        event.update({k: fields[k] for k in ("result", "error") if k in fields})
        args = script_args(event, run or "", status=status.value, **fields)
        reply = self._run(self._transition, job_id, args)
        if reply in _NOT_THIS_RUN:
            raise NotThisRun(f"job {job_id} no longer runs under {run}; not ended {status}")
        if reply in _ENDED_CANCELLED:
            return JobStatus.CANCELLED
        return status if reply not in (0, "0") else None

    def end(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        run: str | None = None,
    ) -> JobStatus | None:
        """End the job in a terminal ``status``: the status it ended in, ``cancelled`` for an end
        ``succeeded`` that published nothing once its cancellation was requested (result
        dropped); None when it is unknown or already terminal. ``run`` (:meth:`transition`): the
        run's own end, :class:`NotThisRun` when the job is no longer that run's (another run
        has it, or it was queued again or ended meanwhile)."""
        assert status.terminal
        fields = {"result": result, "error": error, "finished_at": self.now()}
        return self._change(job_id, status, run, fields)

    def hand_back(
        self,
        job_id: str,
        run: str,
        reasons: tuple[str, str, str],
        max_hand_backs: int,
        max_attempts: int,
    ) -> JobStatus:
        """Give the job back, its worker stopping (:mod:`training.worker_stop`), in one atomic
        step, only while the record runs under ``run``; ``reasons``: the ``queued`` event's
        reason of a run not counted, that of a run counted, and the error of a job out of
        attempts. Its cancellation requested meanwhile, it ends ``cancelled``; else
        ``handed_back`` counts one more, and up to ``max_hand_backs`` of them (FDL_MAX_HAND_BACKS)
        the job is ``queued`` again with the attempt its claim counted taken back (``attempts``
        less one); past them the attempt stays counted, as a reaper counts a lost run's: ``queued``
        again, or ``failed`` once it has ``max_attempts`` (FDL_MAX_ATTEMPTS). The caller sends
        a queued job's message again. The status it was left in (a retry whose first try applied
        answers as the record stands); :class:`NotThisRun` when the record no longer runs under
        ``run`` (nothing changed)."""
        uncounted, counted, give_up = reasons
        outcomes = hand_back_outcomes(uncounted, counted, give_up, self.now())
        event = {"status": JobStatus.QUEUED.value, "reason": uncounted, "handed_back": True}
        own = (run, outcomes, str(max_hand_backs), str(max_attempts))
        reply = str(self._run(self._hand_back, job_id, script_args(event, *own)) or "")
        if reply == COUNTED:
            return JobStatus.QUEUED
        if reply not in (JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED):
            raise NotThisRun(f"job {job_id} no longer runs under {run}; not handed back")
        return JobStatus(reply)

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        run: str | None = None,
    ) -> bool:
        """:meth:`end`, True when it applied; False when the job is unknown or already
        terminal."""
        return self.end(job_id, status, result, error, run) is not None
