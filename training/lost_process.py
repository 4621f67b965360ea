"""A job whose pool process died under it (the kernel's out-of-memory killer, a crash, a stray
``kill -9``) while the worker's main process lives on: settled at once by the main process.

The main process sees the pool process die: Celery's prefork pool reports the task's failure as
``WorkerLostError`` at once (:class:`training.tasks.TrainRequest` hands it here) and starts
another pool process. Its job's record would otherwise stay ``running`` until its heartbeat went
stale (``FDL_STALE_AFTER_S``), and the task message that Celery puts back on the queue is skipped as
"running elsewhere" meanwhile. Instead, once that process is gone, the job is settled as a
reaper settles a lost run, through the same path (:func:`training.reaper.settle_lost_run`): under
the repository's lock, in one atomic step, only while the record still shows that process's
run; ``queued`` again and its message sent (its next claim counts the next attempt), or
``failed`` at its last attempt, ``succeeded`` when it had published, ``cancelled`` when its
cancellation was requested. The reason names how the process ended (its signal), so that an
out-of-memory kill reads as one. A run killed past its hard time limit is not this module's
(Celery reports ``TimeLimitExceeded`` for it, :mod:`training.time_limit`), nor is a cancel
(which never kills a process: the run stops at its next check). A whole worker that dies is
the reaper's.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time

from fdl.jobs import JobStatus, JobStore
from fdl.store_retry import TRANSIENT_ERRORS
from training.reaper import BUSY, Send, settle_lost_run
from training.settings import WorkerSettings
from training.time_limit import process_gone

log = logging.getLogger(__name__)

# How long the main process tries to settle a lost run's job: it waits for the process to be
# gone and for the repository's lock (another worker publishing), then leaves it to the reaper.
LOST_SETTLE_WAIT_S = 60.0
_POLL_S = 0.1
_LOCK_RETRY_S = 1.0
# billiard's words for an exit status: "signal 9 (SIGKILL)", "signal 64", "exitcode 1".
_STATUS = re.compile(r"\bsignal (?P<signal>\d+)\b|\bexitcode (?P<code>-?\d+)\b")


def lost_exitcode(detail: str) -> int | None:
    """The exit status of a lost pool process (negative: the signal that killed it) that
    Celery's ``WorkerLostError`` carries in its words (billiard's ``human_status``: "Worker
    exited prematurely: signal 9 (SIGKILL) Job: 0."), the only place it keeps it; None when
    they name none."""
    found = _STATUS.search(detail)
    if found is None:
        return None
    return -int(found["signal"]) if found["signal"] else int(found["code"])


def exit_reason(worker: str, detail: str) -> str:
    """Why the run of ``worker`` (``"<node>:<pid>"``) ended, for the job's event or error, from
    ``detail``, the words of Celery's ``WorkerLostError`` (:func:`lost_exitcode`; quoted when
    they name no exit status)."""
    process = f"the training process {worker}"
    exitcode = lost_exitcode(detail)
    if exitcode is None:
        return f"{process} was lost ({detail})"
    if exitcode >= 0:
        return f"{process} exited with code {exitcode} while it ran the job"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "an unknown signal"
    killed = f"{process} was killed by {name} (signal {number})"
    if number == signal.SIGKILL:
        return (
            f"{killed}: on Linux usually the kernel's out-of-memory killer (see `dmesg`, or "
            "the container's OOMKilled); give the worker more memory or train with a smaller "
            "batch_size"
        )
    return killed


def settle_when_gone(
    job_id: str,
    pid: int,
    started: str | None,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    reason: str,
    send: Send,
    wait_s: float = LOST_SETTLE_WAIT_S,
) -> str | None:
    """Once pool process ``pid`` (which started at ``started``, :func:`process_start`; None:
    unknown) is gone, settle ``job_id`` if its record still shows the run of ``worker`` (the
    name it claimed the job under) running it, for ``reason``; ``send`` sends its message again
    when it goes back to ``queued``. Waits up to ``wait_s`` in all for the process to be gone
    and for the repository's lock, then leaves the job to the reaper; a settling that Redis
    refuses or fails (the lock given back at once) is tried again, the record read afresh, for
    the store's ``retry_for_s``, then raised. The status the job was left in; None when it was
    left alone (another run has it, it ended, or it waits for the reaper)."""
    deadline = time.monotonic() + wait_s
    while not process_gone(pid, started):
        if time.monotonic() >= deadline:
            log.error("job %s: its process %d is still there; left to the reaper", job_id, pid)
            return None
        time.sleep(_POLL_S)
    refused_until: float | None = None  # how long a settling Redis refuses is tried again
    while True:
        record = store.get(job_id)
        if record is None or record["status"] != JobStatus.RUNNING:
            return None
        if record.get("worker") != worker:
            return None  # another run claimed it since: not this one's to settle
        # The process is gone, so every heartbeat it wrote is older than now: the threshold
        # never holds the job back. The attempts read above do: a claim since counts another.
        try:
            status = settle_lost_run(store, settings, record, store.now() + 1.0, reason, send)
        except TRANSIENT_ERRORS as error:  # the lock was given back: tried again, read afresh
            if refused_until is None:
                refused_until = time.monotonic() + store.retry_for_s
                log.warning("job %s: %s; its settling waits for Redis (%s)", job_id, reason, error)
            elif time.monotonic() >= refused_until:
                raise
            time.sleep(_LOCK_RETRY_S)
            continue
        if status != BUSY:
            if status in (JobStatus.FAILED, JobStatus.CANCELLED):
                log.error("job %s ended %s: %s", job_id, status, reason)
            return status
        if time.monotonic() >= deadline:
            log.error(
                "job %s: %s; the repository's lock is held: left to the reaper", job_id, reason
            )
            return None
        time.sleep(_LOCK_RETRY_S)  # a try that found the lock held waited for it already


def settle_in_thread(
    job_id: str,
    pid: int,
    started: str | None,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    reason: str,
    send: Send,
) -> threading.Thread:
    """:func:`settle_when_gone` in a daemon thread, leaving Celery's loop (where the main
    process learns of the death) free meanwhile."""

    def run() -> None:
        try:
            settle_when_gone(job_id, pid, started, store, settings, worker, reason, send)
        except Exception:  # the reaper settles it once its heartbeat is stale
            log.exception("job %s: could not record that its process was lost", job_id)

    thread = threading.Thread(target=run, name=f"fdl-lost-{job_id}", daemon=True)
    thread.start()
    return thread
