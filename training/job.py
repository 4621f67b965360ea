"""Run one training job end to end: the plain function behind the Celery task.

Idempotent: a job whose record is terminal, or running under a live heartbeat elsewhere, is
skipped, so a redelivered message never runs a job twice at the same time. The claim itself
(:meth:`fdl.jobs.JobStore.mark_running`) is one atomic check-and-set, so two deliveries that read
the record at the same moment do not both run it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fdl.architectures import ARCHITECTURES
from fdl.jobs import JobStatus, JobStore, NotThisRun
from fdl.jobspec import JobSpec
from fdl.store_retry import TRANSIENT_ERRORS, store_state
from training.data import DataMissingError
from training.error_paths import shown_error
from training.heartbeat import Heartbeat
from training.publish import RepositoryFull, naming_full_disk
from training.run_checks import Cancelled, check_cancel, check_under_lock, shown_path, unpublished
from training.run_checks import waiting_for_lock as _waiting
from training.run_end import LOST_RUN, end_run
from training.settings import WorkerSettings
from training.time_limit import Deadline, TimedOut
from training.worker_stop import HandBack, Send, hand_back
from training.worker_stop import check as check_stop

log = logging.getLogger(__name__)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(
    job_id: str,
    store: JobStore,
    settings: WorkerSettings,
    worker: str | None = None,
    send: Send | None = None,
) -> dict[str, Any] | None:
    """Run ``job_id``; returns the job's result, or None when it was skipped or did not succeed.
    A run whose worker is stopping hands the job back (:mod:`training.worker_stop`), its message
    sent again with ``send``."""
    record = store.get(job_id)
    if record is None or record["status"] is None:  # unknown, or what an old worker left
        log.warning("job %s has no record; skipping", job_id)
        return None
    status = JobStatus(record["status"])
    if status.terminal:
        log.info("job %s is already %s; skipping redelivered message", job_id, status)
        return None
    now = store.now()  # Redis's clock, which heartbeats are written by
    if status is JobStatus.RUNNING:
        age = now - float(record.get("heartbeat_at") or 0)
        if age < settings.stale_after_s:
            log.info("job %s runs elsewhere (heartbeat %.0fs ago); skipping", job_id, age)
            return None
    attempts = int(record.get("attempts") or 0)
    if attempts >= settings.max_attempts:
        return _out_of_attempts(job_id, record, store, settings)
    try:
        spec = JobSpec.model_validate(record["spec"])
    except ValidationError as error:
        store.finish(job_id, JobStatus.FAILED, error=f"invalid job spec: {error}")
        return None
    # The claim is atomic: of two deliveries that both read the record above, one runs the job.
    stale_before = now - settings.stale_after_s
    worker = worker or default_worker_name()
    if not store.mark_running(job_id, worker, stale_before):
        log.info("job %s was claimed by another delivery or ended; skipping", job_id)
        return None
    try:
        with Heartbeat(store, job_id, settings.heartbeat_interval_s, worker) as beat:
            ended = _attempt(job_id, spec, store, settings, worker, beat.lost)
            if ended is None:
                return None
            return end_run(job_id, store, worker, *ended, checkpoints=settings.checkpoint_root)
    except HandBack as stop:  # once the beats stopped: none is refused once it is queued
        queue = record.get("queue") or settings.training_queue
        resend = None if send is None else partial(send, job_id, queue, spec.max_duration_s)
        hand_back(store, settings, job_id, worker, str(stop), resend)
        return None


def _out_of_attempts(
    job_id: str, record: dict[str, Any], store: JobStore, settings: WorkerSettings
) -> dict[str, Any] | None:
    """End a job whose runs were all lost, as the reaper does and under the repository's lock
    as it does (:func:`training.publish.fence`): its last run may only be paused, in its
    publish. With the lock held elsewhere, the job is left to the reaper."""
    from filelock import Timeout

    from training.publish import fence, published_by_record, render_config_again

    try:
        with fence(settings.model_dir, settings.serving_model_base_path) as held:
            published = published_by_record(settings.model_dir, record)
            if published is not None:  # its last run was lost after publishing: it is done
                store.finish(job_id, JobStatus.SUCCEEDED, result=published)
                render_config_again(settings.model_dir, None, job_id, held)
                return published
            if record.get("cancel_requested"):  # as the reaper decides: a cancel comes first
                store.finish(job_id, JobStatus.CANCELLED, error="cancelled by request")
                return None
            attempts = int(record.get("attempts") or 0)
            gave_up = f"gave up after {attempts} attempts: the worker running it was lost each time"
            store.finish(job_id, JobStatus.FAILED, error=gave_up)
    except (Timeout, OSError):
        why = "the model repository's lock is held or cannot be taken"
        log.warning("job %s is out of attempts, but %s: left to the reaper", job_id, why)
    return None


def _attempt(
    job_id: str,
    spec: JobSpec,
    store: JobStore,
    settings: WorkerSettings,
    worker: str,
    lost: threading.Event,
) -> tuple[JobStatus, dict[str, Any] | None, str | None] | None:
    """Run the claimed job (:func:`execute`): how it ends (status, result, error), or None when
    it is no longer this run's or is left running for the reaper."""
    deadline = Deadline.start(settings, spec.max_duration_s)
    try:
        result = execute(job_id, spec, store, settings, deadline, worker, lost)
    except NotThisRun:
        log.warning(LOST_RUN, job_id, "this one published nothing")
        return None
    except HandBack:
        raise
    except Cancelled:
        return JobStatus.CANCELLED, None, "cancelled by request"
    except (DataMissingError, TimedOut, RepositoryFull) as error:
        log.warning("job %s failed: %s", job_id, error)
        return JobStatus.FAILED, None, shown_error(str(error), settings)
    except TRANSIENT_ERRORS as error:
        # The job store stayed away longer than FDL_REDIS_RETRY_S: "failed" would end, for an
        # outage, a job that a re-run can finish. Left running, its heartbeat goes stale and a
        # reaper runs it again (docs/training.md).
        state = store_state(error)
        stayed = f"{state} for over {settings.redis_retry_s:.0f}s ({error})"
        log.error("job %s stopped: the job store was %s; left to the reaper", job_id, stayed)
        return None
    except Exception as error:
        log.exception("job %s failed", job_id)
        return JobStatus.FAILED, None, shown_error(failure_message(error), settings)
    return JobStatus.SUCCEEDED, result, None


# A Python MemoryError says nothing (``str()`` is empty, or numpy's "Unable to allocate …").
OUT_OF_MEMORY = (
    "out of memory while training ({error}): lower batch_size or max_train_examples, or give "
    "the worker more memory"
)


def failure_message(error: Exception) -> str:
    """The job's error for an exception nothing else explains: its type and message."""
    named = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return OUT_OF_MEMORY.format(error=named) if isinstance(error, MemoryError) else named


def execute(
    job_id: str,
    spec: JobSpec,
    store: JobStore,
    settings: WorkerSettings,
    deadline: Deadline | None = None,
    worker: str | None = None,
    lost: threading.Event | None = None,
) -> dict[str, Any]:
    """Train, evaluate and publish; ``deadline`` (default: starts now) bounds the run. With
    ``worker`` (the name the run claimed the job under), a job no longer running under it
    publishes nothing (:class:`NotThisRun`): the record refuses the run's writes (its events,
    its progress), and the checks between steps stop it once ``lost`` is set (the run's
    heartbeat thread sets it when the record refuses a beat)."""
    deadline = deadline or Deadline.start(settings, spec.max_duration_s)
    # TensorFlow is imported here so that importing the task module stays light.
    from training.artifacts import write_model
    from training.data.registry import load_dataset
    from training.model_kind import ModelKind
    from training.publish import (
        GateClosed,
        gate_under_lock,
        publish,
        published_before,
        quality_gate,
        staging_dir,
    )
    from training.trainer import train

    arch = ARCHITECTURES[spec.model]
    earlier = published_before(settings.model_dir, str(spec.publish_as), job_id)
    if earlier is not None:  # a re-run after the first run published: one version per job
        store.append_event(job_id, "log", {"message": earlier["reason"]}, run=worker)
        return earlier
    check_stop("before it loaded its data")
    store.append_event(job_id, "log", {"message": f"loading dataset {spec.dataset}"}, run=worker)
    data = load_dataset(
        str(spec.dataset),
        arch.image_shape,
        settings.data_dir,
        settings.var_dir,
        settings.download,
        settings.download_timeout_s,
    ).capped(spec.max_train_examples, spec.max_test_examples)
    check_cancel(store, job_id, lost)
    deadline.check("after loading the data")
    check_stop("after it loaded its data, before training")
    tensorboard_dir = settings.var_dir / "tensorboard" / job_id
    outcome = train(
        spec,
        data,
        store,
        job_id,
        tensorboard_dir,
        settings.mixed_precision,
        settings.steps_per_execution,
        deadline,
        worker,
        lost,
        settings.checkpoint_root if settings.checkpoints else None,
    )
    if outcome.cancelled:
        raise Cancelled
    deadline.check("after training, before the quality gate")
    name = str(spec.publish_as)
    model_path: Path = settings.model_dir / name
    accuracy = outcome.metrics["test_accuracy"]
    kind = ModelKind.of(data, arch.image_shape)  # only_if_better compares with its own kind
    published, reason = quality_gate(spec.publish, accuracy, model_path, kind)
    result: dict[str, Any] = {
        "model": name,
        "version": None,
        "published": False,
        "reason": reason,
        "metrics": outcome.metrics,
        "epochs_run": outcome.runtime.get("epochs_run"),
        "tensorboard_dir": shown_path(tensorboard_dir),
    }
    if resumed := outcome.runtime.get("resumed_after_epoch"):  # resumed from a checkpoint
        result["resumed_after_epoch"] = resumed
    if not published:  # a cancel accepted meanwhile (or until its end) ends it cancelled
        return unpublished(store, job_id, lost, result)
    gate = gate_under_lock(spec.publish, accuracy, kind)
    staged = staging_dir(model_path, job_id)
    try:
        with naming_full_disk(settings.model_dir):  # a full disk: an error to act on
            write_model(staged, job_id, spec, data, outcome)
            check_cancel(store, job_id, lost)  # before waiting for the repository's lock
            deadline.check("after the export")

            def last_checks(model_path: Path) -> None:
                check_under_lock(store, job_id, worker)  # last chance: nothing is visible yet
                deadline.check("while it waited for the model repository's lock")
                gate(model_path)

            result["version"], published_now = publish(
                staged,
                settings.model_dir,
                name,
                job_id,
                settings.serving_model_base_path,
                last_checks,
                # Rounds shorter than the kill grace: the time limit, checked between rounds,
                # ends the run before Celery's hard limit could kill it in the middle of a wait.
                # At least a second: each round adds a note to the job's capped event stream.
                max(1.0, min(settings.publish_lock_wait_s, settings.job_kill_grace_s / 2)),
                _waiting(store, job_id, worker, deadline),
            )
    except GateClosed as closed:  # a better version was published while this job trained
        result["reason"] = str(closed)
        return unpublished(store, job_id, lost, result)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if not published_now:  # another run of this job put its version in while this one trained
        return published_before(settings.model_dir, name, job_id) or {**result, "published": True}
    result["published"] = True
    if gate.reason is not None:  # the check under the lock, after any wait: the newest version
        result["reason"] = gate.reason
    return result
