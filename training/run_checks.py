"""The checks of a job's record that a run makes between its steps (:mod:`training.job`): its
cancellation, whether the job is still its own, and what it does while it waits for the model
repository's lock."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fdl.job_records import JOB_KEY
from fdl.jobs import JobStatus, JobStore, NotThisRun
from fdl.store_retry import TRANSIENT_ERRORS
from training.time_limit import Deadline

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job stops: its cancellation was requested, or its record is gone."""


def shown_path(path: Path) -> str:
    """``path`` relative to the worker's working directory when it lies inside it (``fdl up``
    passes absolute folders; users read ``var/tensorboard/<id>``), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_cancel(store: JobStore, job_id: str, lost: threading.Event | None = None) -> None:
    """Stop the job when it is no longer this run's (``lost``, set by the run's heartbeat thread
    when the record refused a beat), its cancellation was requested or its record is gone."""
    if lost is not None and lost.is_set():
        raise NotThisRun
    if store.stop_requested(job_id):
        raise Cancelled


def unpublished(
    store: JobStore, job_id: str, lost: threading.Event | None, result: dict[str, Any]
) -> dict[str, Any]:
    """``result``, of a run that publishes nothing (its quality gate said no), once the record
    was checked again: a cancel that the gateway accepted while the run evaluated, or waited for
    the gate, ends the job ``cancelled`` (:class:`Cancelled`), not ``succeeded``. One accepted
    after this check is the run's end's to decide (TRANSITION_SCRIPT, :mod:`fdl.job_scripts`)."""
    check_cancel(store, job_id, lost)
    return result


def check_under_lock(
    store: JobStore, job_id: str, worker: str | None, unreadable: str = "under the lock; publishing"
) -> None:
    """The record's check just before the rename, under the repository's lock (which may have
    been waited for), and between rounds of waiting for it: :class:`Cancelled` when its
    cancellation was requested or the record is gone, :class:`NotThisRun` when it is no longer
    running under ``worker`` (None: not checked). One read, no retries, so that a Redis outage
    never holds the lock nor ends a finished job; unreachable, it counts as passed (the checks
    before did), and the warning says ``unreadable``."""
    try:
        raw = store.redis.hmget(JOB_KEY.format(job_id), ["status", "cancel_requested", "worker"])
    except TRANSIENT_ERRORS:
        log.warning("job %s: its record is unreadable %s", job_id, unreadable)
        return
    status, flag, holder = (json.loads(value) if value else None for value in raw)
    if status is None or flag:
        raise Cancelled
    if worker is not None and (status != JobStatus.RUNNING or holder != worker):
        raise NotThisRun


def waiting_for_lock(
    store: JobStore, job_id: str, worker: str | None, deadline: Deadline
) -> Callable[[Path, float], None]:
    """What a finished job does between rounds of waiting for the model repository's lock,
    which another writer holds: it stops when cancelled, no longer its run, or out of time,
    else it says that it waits (a warning and a ``log`` event) and waits another round
    (``FDL_PUBLISH_LOCK_WAIT_S``). Its export, the hours of training, is kept meanwhile; the
    heartbeat thread goes on. A Redis outage meanwhile neither ends it nor stretches its rounds:
    the record's check (one read) counts as passed and the note (one attempt) is skipped; the
    check under the lock reads the record again."""

    def waiting(lock_file: Path, waited_s: float) -> None:
        check_under_lock(store, job_id, worker, "while it waits for the lock; waiting on")
        deadline.check("while it waited for the model repository's lock")
        message = (
            f"waiting for the model repository's lock ({shown_path(lock_file)}), which another "
            f"writer holds: {waited_s:.0f} s so far"
        )
        log.warning("job %s: %s", job_id, message)
        try:  # one attempt: a note that Redis does not take must not stretch the round
            store.append_event(job_id, "log", {"message": message}, retry=False, run=worker)
        except TRANSIENT_ERRORS as error:
            log.warning("job %s: its note that it waits was not recorded (%s)", job_id, error)

    return waiting
