"""The Celery application of the training worker.

Run it with::

    celery -A training.tasks worker --concurrency 1 --prefetch-multiplier 1 --loglevel INFO

It consumes ``FDL_TRAINING_QUEUE`` (the app's default queue), the queue the gateway sends to. The
task is a thin wrapper over :func:`training.job.run_job`. TensorFlow is imported only in the
pool process that runs a job, never in the parent (TensorFlow is not fork-safe).

The task's hard time limit (``FDL_MAX_JOB_DURATION_S``, or the spec's ``max_duration_s`` when
lower, + ``FDL_JOB_KILL_GRACE_S``) is the backstop for a run stuck where the job's own checks
never come (:mod:`training.time_limit`): the prefork pool, this command's default, kills the
pool process and starts another. Celery calls the request's timeout handler in the main process
just before it kills that process; the handler leaves a thread to end the job once the process
is gone (:class:`TrainRequest`).
"""

from __future__ import annotations

import logging
import os
from functools import cache, partial
from typing import Any

from celery import Task
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state
from celery.worker.request import Request

from fdl.jobs import JobStore
from fdl.queue import MAX_DURATION_HEADER, TRAIN_TASK, enqueue_training, make_celery
from training.job import run_job
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
    sender = make_celery(
        settings.require_redis_url(),
        settings.training_queue,
        visibility_timeout_s=settings.visibility_timeout_s,
    )
    store = JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)
    thread = ReaperThread(store, settings, partial(enqueue_training, sender))
    thread.start()
    _reaper.append(thread)


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    for thread in _reaper:
        thread.stopped.set()
