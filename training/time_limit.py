"""How long a job may take: the worker's ``FDL_MAX_JOB_DURATION_S``, or less when the job's spec
asks (``max_duration_s``). A run that resumed from a checkpoint has what is left of it: the
checkpoint's training seconds (those of the job's earlier runs up to its epoch) count
(:meth:`Deadline.resumed`); a run that starts over has the whole limit again.

The limit is checked where the job already checks its cancellation flag: between calls into
the training graph (:class:`training.callbacks.JobCallback`) and between the job's stages
(:func:`training.job.execute`); a run past it ends ``failed`` and publishes nothing. Where no
check comes (data loading that hangs, a call that never returns), the Celery task's hard time
limit, ``FDL_JOB_KILL_GRACE_S`` later, has the pool process killed and replaced, and the
worker's main process ends the job once that process is gone (:func:`end_when_gone`): Celery
calls its timeout handlers before it kills the process, which may still be renaming its version
in or holding the repository's lock. Celery's soft time limit is not used: it raises wherever
the process happens to be, the publication under the repository's lock included.

The hard limit is set per run, from the spec's ``max_duration_s`` that the task message carries
(:data:`fdl.queue.MAX_DURATION_HEADER`, :func:`limit_from_message`): a message never makes it
longer than the worker's own, and one without the value gets the worker's. It is the whole limit
also for a resumed run: only the run finds out whether its checkpoint can be used (one that
cannot starts the job over, with the whole limit), and the checks above stop it in time.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fdl.jobs import JobStatus, JobStore
from training.publish import published_by_record, render_config_again
from training.settings import WorkerSettings

log = logging.getLogger(__name__)


class TimedOut(Exception):
    """The job ran longer than it may; ``str()`` is the job's error."""


@dataclass
class Deadline:
    """When a run must stop: its job's limit from the run's start, less the training seconds of
    the job's earlier runs that a checkpoint preserved (:meth:`resumed`): the limit is the
    job's, not each run's."""

    limit_s: float
    source: str  # which setting the limit comes from, for the error
    at: float  # time.monotonic()
    spent_s: float = 0.0  # the job's training seconds before this run (its checkpoint's)
    resumed_after: int = 0  # the epoch of the checkpoint this run resumed from

    @classmethod
    def start(cls, settings: WorkerSettings, spec_limit_s: float | None) -> Deadline:
        """The deadline of a run that starts now (:func:`run_limit`)."""
        limit, source = run_limit(settings, spec_limit_s)
        return cls(limit, source, time.monotonic() + limit)

    def resumed(self, spent_s: float, epoch: int) -> None:
        """The run resumed after ``epoch`` from a checkpoint that preserved ``spent_s`` training
        seconds of the job's earlier runs: they count against the limit (the time those runs
        spent after that checkpoint, lost with their work, does not)."""
        self.at -= spent_s - self.spent_s
        self.spent_s, self.resumed_after = spent_s, epoch

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def error(self, where: str) -> str:
        earlier = ""
        if self.resumed_after:
            earlier = (
                f"; {self.spent_s:.10g} s of them trained by its earlier runs, up to its "
                f"checkpoint after epoch {self.resumed_after}, which this run resumed from"
            )
        return (
            f"ran longer than {self.limit_s:.10g} s ({self.source}{earlier}): stopped {where}; "
            "nothing was published"
        )

    def check(self, where: str) -> None:
        """Raise :class:`TimedOut` once the deadline has passed; ``where``: what the job was
        doing, for the error."""
        if self.passed():
            raise TimedOut(self.error(where))


def run_limit(settings: WorkerSettings, spec_limit_s: float | None) -> tuple[float, str]:
    """How long a run may take, and which setting says so (for its error): the spec's limit when
    it asks for less than the worker's ``FDL_MAX_JOB_DURATION_S``, else the worker's."""
    if spec_limit_s is not None and spec_limit_s < settings.max_job_duration_s:
        return spec_limit_s, "its spec's max_duration_s"
    return settings.max_job_duration_s, "the worker's FDL_MAX_JOB_DURATION_S"


def hard_limit_s(settings: WorkerSettings, spec_limit_s: float | None = None) -> float:
    """The Celery hard time limit of a run: how long it may take (:func:`run_limit`), and the
    grace it has to stop (always the worker's ``FDL_JOB_KILL_GRACE_S``)."""
    return run_limit(settings, spec_limit_s)[0] + settings.job_kill_grace_s


def limit_from_message(value: object) -> float | None:
    """The spec's ``max_duration_s`` as a task message carries it
    (:data:`fdl.queue.MAX_DURATION_HEADER`), or None: a message without it (from a gateway that
    predates it) or with anything but a positive finite number gets the worker's limit. A value
    above the worker's limit changes nothing (:func:`run_limit`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        limit = float(value)
    except OverflowError:  # an int too large for a float: more than any worker allows
        return None
    return limit if math.isfinite(limit) and limit > 0 else None


# How long the main process waits for a killed pool process to be gone before it leaves the job
# to the reaper (a process stuck in the kernel, on hung storage, outlives SIGKILL a while), and
# how often it looks.
KILLED_EXIT_WAIT_S = 60.0
_POLL_S = 0.1
_PROC = Path("/proc")


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (``/proc``: clock ticks since boot), to tell it from a later
    process given the same pid; None when unknown (it is gone, or there is no ``/proc``)."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None else None


def process_gone(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` (which started at ``started``, :func:`process_start`) has exited:
    no such process, a zombie (exited, not yet reaped by its parent), or another process that
    got its pid since."""
    if not _PROC.is_dir():  # not Linux: a zombie counts as alive until its parent reaps it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
    fields = _stat_fields(pid)
    return (
        fields is None or fields[0] in ("Z", "X") or (started is not None and fields[19] != started)
    )


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None when the
    process is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def end_when_gone(
    job_id: str,
    pid: int,
    started: str | None,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    spec_limit_s: float | None = None,
) -> threading.Thread:
    """In the worker's main process, when Celery's hard time limit fired for the pool process
    ``pid`` (which started at ``started``) that runs ``job_id`` under the name ``worker``, with
    the spec's limit ``spec_limit_s`` from its message: starts a daemon thread that ends the job
    once that process is gone (:func:`end_job_once_gone`), leaving Celery's loop free
    meanwhile."""

    def run() -> None:
        try:
            end_job_once_gone(
                job_id, pid, started, store, settings, worker, spec_limit_s=spec_limit_s
            )
        except Exception:  # the reaper ends it once its heartbeat is stale
            log.exception("job %s: could not record that its process was killed", job_id)

    thread = threading.Thread(target=run, name=f"fdl-killed-{job_id}", daemon=True)
    thread.start()
    return thread


def end_job_once_gone(
    job_id: str,
    pid: int,
    started: str | None,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    wait_s: float = KILLED_EXIT_WAIT_S,
    spec_limit_s: float | None = None,
) -> str | None:
    """Wait up to ``wait_s`` for process ``pid`` to be gone, then :func:`end_killed_job`. A
    process still there is left alone, and so is its job (the reaper settles it once its
    heartbeat stops): ended now, its version could still be renamed in, or its config not
    rendered while it holds the repository's lock. Returns the status the job was left in."""
    deadline = time.monotonic() + wait_s
    while not process_gone(pid, started):
        if time.monotonic() >= deadline:
            log.error(
                "job %s: its process %d was killed but had not exited %g s later; left to the "
                "reaper",
                job_id,
                pid,
                wait_s,
            )
            return None
        time.sleep(_POLL_S)
    return end_killed_job(job_id, store, settings, worker, spec_limit_s)


def end_killed_job(
    job_id: str,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    spec_limit_s: float | None = None,
) -> str | None:
    """End ``job_id``, whose process Celery killed past the task's hard time limit and which is
    gone now, as the reaper ends a lost job, in one atomic step
    (:meth:`fdl.jobs.JobStore.settle_lost`): ``succeeded`` when that process had published its
    version (the config rendered again), else ``cancelled`` when its cancellation was
    requested, else ``failed`` (never queued again: it would run out of time again). Else it
    would stay ``running`` until a reaper took it for lost and ran it again. Only while the
    record shows the run of ``worker`` (``"<node>:<pid>"``, the name it claimed the job under):
    a job that another worker claimed since (its heartbeat went stale) is left alone. The error
    names the limit that applied to the run (``spec_limit_s``: the spec's that its message
    carried, :func:`run_limit`). Returns the status it was left in, None when it was left
    alone."""
    record = store.get(job_id)
    if record is None or record["status"] != JobStatus.RUNNING or record.get("worker") != worker:
        return None
    published = published_by_record(settings.model_dir, record)
    limit, source = run_limit(settings, spec_limit_s)
    grace = settings.job_kill_grace_s
    reason = f"its process was killed {limit + grace:.10g} s after the run started"
    error = (
        f"ran longer than {limit:.10g} s ({source}) and had not stopped {grace:.10g} s later "
        "(stuck outside the training loop: reading data, or a call that did not return): its "
        "process was killed; nothing was published"
    )
    # Its process is gone, so every heartbeat it wrote is older than now: the threshold never
    # holds the job back. The attempts read above do: a claim since counts another.
    attempts = int(record.get("attempts") or 0)
    status = store.settle_lost(job_id, store.now() + 1.0, attempts, reason, published, error)
    if status == JobStatus.SUCCEEDED:
        render_config_again(settings.model_dir, settings.serving_model_base_path, job_id)
    elif status == JobStatus.FAILED:
        log.error("job %s: %s", job_id, error)
    return status
