"""The Celery application of the training worker.

Run it with::

    celery -A training.tasks worker --concurrency 1 --prefetch-multiplier 1 --loglevel INFO

It consumes ``FDL_TRAINING_QUEUE`` (the app's default queue), the queue the gateway sends to. The
task is a thin wrapper over :func:`training.job.run_job`. TensorFlow is imported only in the
pool process that runs a job, never in the parent (TensorFlow is not fork-safe).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from fdl.jobs import JobStore
from fdl.queue import TRAIN_TASK, enqueue_training, make_celery
from training.job import run_job
from training.reaper import ReaperThread
from training.settings import get_settings

settings = get_settings()
app = make_celery(
    settings.require_redis_url(),
    settings.training_queue,
    visibility_timeout_s=settings.visibility_timeout_s,
)


@cache
def job_store() -> JobStore:
    # Created lazily, in the process that uses it (after the pool forks).
    return JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s)


@app.task(name=TRAIN_TASK, bind=True)
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
    thread = ReaperThread(
        JobStore.from_url(settings.require_redis_url(), settings.redis_retry_s),
        settings,
        lambda job_id, queue: enqueue_training(sender, job_id, queue),
    )
    thread.start()
    _reaper.append(thread)


@worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    for thread in _reaper:
        thread.stopped.set()
