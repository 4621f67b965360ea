"""The Celery application of the training worker.

Run it with ``fdl-worker`` (:mod:`training.worker_main`: Celery's worker with this app object and
``--concurrency 1 --prefetch-multiplier 1 --loglevel INFO``), never ``celery -A training.tasks``,
which imports a ``training`` of the current folder first.

It consumes ``FDL_TRAINING_QUEUE`` (the app's default queue), the queue the gateway sends to. The
task is a thin wrapper over :func:`training.job.run_job`. TensorFlow is imported only in the
pool process that runs a job, never in the parent (TensorFlow is not fork-safe).

The task's hard time limit (``FDL_MAX_JOB_DURATION_S``, or the spec's ``max_duration_s`` when
lower, + ``FDL_JOB_KILL_GRACE_S``) is the backstop for a run stuck where the job's own checks
never come (:mod:`training.time_limit`): the prefork pool, this command's default, kills the
pool process and starts another. Celery calls the request's timeout handler in the main process
just before it kills that process; the handler leaves a thread to end the job once the process
is gone (:class:`TrainRequest`).

A pool process that dies otherwise (the out-of-memory killer, a crash) is reported to the
request's failure handler in the main process as ``WorkerLostError`` as soon as the pool sees it
gone: the handler leaves a thread that settles its job as a reaper would, at once rather than
once its heartbeat is stale (:mod:`training.lost_process`).
"""

from __future__ import annotations

import logging
import os
from functools import cache, partial
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state
from celery.worker.request import Request

from fdl.jobs import JobStore
from fdl.queue import MAX_DURATION_HEADER, TRAIN_TASK, enqueue_training, make_celery
from training.job import run_job
from training.lost_process import exit_reason, settle_in_thread
from training.reaper import ReaperThread
from training.settings import settings_or_exit
from training.time_limit import end_when_gone, hard_limit_s, limit_from_message, process_start

log = logging.getLogger(__name__)
settings = settings_or_exit()  # an invalid setting stops the worker here, in one line
app = make_celery(
    settings.require_redis_url(),
    settings.training_queue,
    visibility_timeout_s=settings.visibility_timeout_s,
)


@cache
def job_store() -> JobStore:
    # Created lazily, in the process that uses it (after the pool forks).
    return JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)


@cache
def sender() -> Celery:
    """The app that the main process's threads (the reaper, :mod:`training.lost_process`) send
    jobs' messages again with."""
    return make_celery(
        settings.require_redis_url(),
        settings.training_queue,
        visibility_timeout_s=settings.visibility_timeout_s,
    )


class TrainRequest(Request):  # type: ignore[misc]
    """A task message in the worker's main process; knows the pool process that runs it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The time limits of this run, which Celery's pool applies (``execute_using_pool``): the
        # hard one bounded by the spec's limit that the message carries, never longer than the
        # worker's; no soft one. Celery's own ``timelimit`` header, which the base class reads,
        # is ignored: it could lengthen the run, or ask for a soft limit, which raises wherever
        # the process is (under the repository's lock too).
        self.spec_limit_s = limit_from_message(self.request_dict.get(MAX_DURATION_HEADER))
        self.time_limits = (hard_limit_s(settings, self.spec_limit_s), None)
        self.process_started: str | None = None

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        # When its pool process started, to tell it from a later process given its pid.
        self.process_started = process_start(pid)
        super().on_accepted(pid, time_accepted)

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        # In the main process: the task failed, or its pool process died (WorkerLostError; a
        # run past its hard time limit is TimeLimitExceeded, :meth:`on_timeout`'s). Celery puts
        # the message back on the queue, where it is skipped while the record shows the dead
        # run running; the job is settled here instead, as a reaper would, without waiting for
        # its heartbeat to go stale.
        super().on_failure(exc_info, send_failed_event, return_ok)
        error = exc_info.exception
        if isinstance(error, ExceptionWithTraceback):
            error = error.exc
        if not isinstance(error, WorkerLostError) or worker_state.should_terminate:
            return  # a cold shutdown kills the pool itself: the reaper settles the job
        pid = self.worker_pid
        if not pid or not self.args:
            return
        job_id, worker = str(self.args[0]), f"{self.hostname}:{pid}"
        reason = exit_reason(worker, str(error))
        log.error("job %s: %s", job_id, reason)
        store = JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)
        send = partial(enqueue_training, sender())
        settle_in_thread(job_id, pid, self.process_started, store, settings, worker, reason, send)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        # Celery's hard time limit: called before the pool process is killed (SIGTERM, then
        # SIGKILL), which may still be publishing. Its job is ended once it is gone, by a thread:
        # it may take a while, and this is Celery's loop.
        pid = self.worker_pid
        started = process_start(pid) if pid and not soft else None  # before it is killed
        super().on_timeout(soft, timeout)
        if soft or worker_state.should_terminate or not self.args:
            return  # at a cold shutdown Celery skips its failure handling; the reaper ends it
        job_id = str(self.args[0])
        if not pid:
            log.error("job %s: killed, but its process is unknown; left to the reaper", job_id)
            return
        store = JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)
        worker = f"{self.hostname}:{pid}"
        end_when_gone(job_id, pid, started, store, settings, worker, self.spec_limit_s)


class TrainTask(Task):  # type: ignore[misc]
    Request = TrainRequest


@app.task(name=TRAIN_TASK, bind=True, base=TrainTask, time_limit=hard_limit_s(settings))
def train(self: Any, job_id: str) -> None:
    run_job(job_id, job_store(), settings, worker=f"{self.request.hostname}:{os.getpid()}")


_reaper: list[ReaperThread] = []


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    store = JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)
    thread = ReaperThread(store, settings, partial(enqueue_training, sender()))
    thread.start()
    _reaper.append(thread)


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    for thread in _reaper:
        thread.stopped.set()
