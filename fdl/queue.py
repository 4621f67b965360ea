"""The Celery application shared by the gateway (which sends) and the training worker (which runs).

Importing this module pulls in Celery only, never TensorFlow. ``training.tasks`` registers the
task body on the app built here.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from fdl.redis_url import credentials_in_userinfo

TRAIN_TASK = "fdl.train"
# The header of a task message that carries its job spec's ``max_duration_s``: the worker bounds
# the hard time limit of the run by it (``training.tasks.TrainRequest``); a worker that predates
# it ignores it. Not Celery's own ``timelimit`` header, which is the hard limit itself: the worker
# adds the grace it alone knows, and names the right limit when the run is killed.
MAX_DURATION_HEADER = "fdl_max_duration_s"
# Longer than the longest training job: Redis redelivers an unacknowledged message only after it.
DEFAULT_VISIBILITY_TIMEOUT_S = 12 * 3600


def make_celery(
    redis_url: str,
    queue: str = "training",
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S,
    send_timeout_s: float | None = None,
) -> Celery:
    """The app; ``send_timeout_s``: the broker connection's socket timeouts, for a sender (the
    gateway) that must not wait as long as a hung Redis does (kombu's default is none), and one
    retry of a failed send instead of Celery's three, so that a send is given up after about
    twice that. Never for a worker, whose blocking reads of the queue would time out.

    A password in the URL's query (``?password=``, as redis-py takes it) is moved into its
    userinfo, the only place kombu reads it from (:func:`fdl.redis_url.credentials_in_userinfo`)."""
    transport: dict[str, float] = {"visibility_timeout": visibility_timeout_s}
    sender: dict[str, Any] = {}
    if send_timeout_s is not None:
        transport |= {"socket_timeout": send_timeout_s, "socket_connect_timeout": send_timeout_s}
        sender["task_publish_retry_policy"] = {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        }
    app = Celery("fdl", broker=credentials_in_userinfo(redis_url))
    app.conf.update(
        task_default_queue=queue,
        task_routes={TRAIN_TASK: {"queue": queue}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # An ack that Redis refuses (full: maxmemory, noeviction) reconnects, not kills, the worker;
        # a reconnection that such a Redis (or a read-only replica) refuses once the connection is
        # open is closed and retried later by the worker's consumer (training.tasks.TrainConsumer).
        broker_channel_error_retry=True,
        broker_transport_options=transport,
        task_serializer="json",
        accept_content=["json"],
        **sender,
    )
    return app


def enqueue_training(
    app: Celery, job_id: str, queue: str = "training", max_duration_s: float | None = None
) -> None:
    """Send the task of ``job_id`` to ``queue``; ``max_duration_s``: its spec's, if it has one
    (:data:`MAX_DURATION_HEADER`)."""
    headers = {MAX_DURATION_HEADER: max_duration_s} if max_duration_s is not None else None
    app.send_task(TRAIN_TASK, args=[job_id], task_id=job_id, queue=queue, headers=headers)
