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

A routine stop of the worker (its first SIGTERM or Ctrl-C, Celery's warm shutdown, or a SIGTERM
to its whole process group) has the running job handed back, uncounted (up to
FDL_MAX_HAND_BACKS hand-backs of a job), at the run's next check (:mod:`training.worker_stop`):
the SIGTERMs that Celery itself sends the pool process (the hard time limit's, a cold
shutdown's, a revoke's) are marked as kills first, and still kill it.
"""

from __future__ import annotations

import logging
import os
import time
from functools import cache, partial
from typing import Any

from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import state as worker_state
from celery.worker.consumer.consumer import CONNECTION_ERROR, Consumer
from celery.worker.request import Request
from kombu.common import ignore_errors

from fdl.jobs import JobStore
from fdl.queue import MAX_DURATION_HEADER, TRAIN_TASK, enqueue_training, make_celery
from training.job import run_job
from training.lost_process import exit_reason, settle_in_thread
from training.reaper import ReaperThread
from training.settings import settings_or_exit
from training.time_limit import end_when_gone, hard_limit_s, limit_from_message, process_start
from training.worker_stop import handing_back_on_sigterm, mark_killed, stop_runs, unmark

log = logging.getLogger(__name__)
settings = settings_or_exit()  # an invalid setting stops the worker here, in one line
app = make_celery(
    settings.require_redis_url(),
    settings.training_queue,
    visibility_timeout_s=settings.visibility_timeout_s,
)
# The waits of the consumer between connections that Redis refused to set up, one after the
# other (the last one again and again): the longest is how late it consumes once Redis takes
# writes again.
RECONNECT_WAITS_S = (0.5, 1.0, 2.0, 4.0)


class TrainConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, closing a broker connection whose setup failed once it was open, and
    waiting longer after each such failure in a row (:data:`RECONNECT_WAITS_S`).

    A Redis that answers PING but refuses writes (a read-only replica during a failover, a full
    one at ``maxmemory``) passes kombu's check of a new connection, then refuses the ``SET`` of
    the mutex that kombu's transport takes to restore unacknowledged messages as the connection
    joins the event loop (``on_poll_init``). With ``broker_channel_error_retry`` that refusal
    is retried (:func:`fdl.queue.make_celery`), but Celery (5.7) raises it before it holds the
    connection: it left its two sockets open and tried again at once, some six times a second
    (``RestartFreqExceeded``), until Redis reached ``maxclients``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opening: Any = None  # the connection that connect() is setting up
        self.refused = 0  # connections refused in a row

    def connection_for_read(self, heartbeat: float | None = None) -> Any:
        self.opening = super().connection_for_read(heartbeat)
        return self.opening

    def connect(self) -> Any:
        self.opening = None
        try:
            connection = super().connect()
        except BaseException:
            if self.opening is not None:
                ignore_errors(self.opening, self.opening.close)
            raise
        finally:
            self.opening = None
        self.refused = 0
        return connection

    def on_connection_error_before_connected(self, exc: BaseException) -> None:
        # Celery's own line, with the wait instead of "Trying to reconnect...".
        wait = RECONNECT_WAITS_S[min(self.refused, len(RECONNECT_WAITS_S) - 1)]
        self.refused += 1
        log.error(CONNECTION_ERROR, self.conninfo.as_uri(), exc, f"Trying again in {wait} s...")
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            worker_state.maybe_shutdown()  # a stop asked for meanwhile ends the wait
            time.sleep(min(left, 0.2))


app.conf.worker_consumer = TrainConsumer


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
        # Here, before any kill of this run can be marked, not in the pool process (whose
        # clearing could come after a revoke's mark below, its kill then handing the job back).
        if getattr(self, "_terminate_on_ack", None) is not None:
            mark_killed(pid)  # a revoke's kill (terminate) waiting for the process's pid
        else:
            unmark(pid)  # a mark left for a process that had the pid before
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

    def cancel(self, pool: Any, signal: Any = None, emit_retry: bool = True) -> None:
        # A cold shutdown's kill of the pool process (SIGTERM): a kill, not a stop to hand the
        # job back at (training/worker_stop.py). So is a revoke's (terminate).
        if self.worker_pid:
            mark_killed(self.worker_pid)
        super().cancel(pool, signal, emit_retry=emit_retry)

    def terminate(self, pool: Any, signal: Any = None) -> None:
        if self.worker_pid:
            mark_killed(self.worker_pid)
        super().terminate(pool, signal)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        # Celery's hard time limit: called before the pool process is killed (SIGTERM, then
        # SIGKILL), which may still be publishing. Its job is ended once it is gone, by a thread:
        # it may take a while, and this is Celery's loop.
        pid = self.worker_pid
        if pid and not soft:
            mark_killed(pid)  # its SIGTERM is a kill (training/worker_stop.py)
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
    # A stop of the worker (SIGTERM to this pool process, or the main process's stop_runs)
    # hands the job back, its message sent again (training/worker_stop.py).
    worker = f"{self.request.hostname}:{os.getpid()}"
    with handing_back_on_sigterm():
        run_job(job_id, job_store(), settings, worker, _send_again)


def _send_again(job_id: str, queue: str, max_duration_s: float | None) -> None:
    """Send the message of a job handed back again; when that fails, the message the task runs
    goes back to the queue instead (acks_late: it is not acknowledged yet), rather than leaving
    the job without one until a reaper sends it again (FDL_RESEND_QUEUED_AFTER_S)."""
    try:
        enqueue_training(app, job_id, queue, max_duration_s)
    except Exception as error:
        raise Reject(f"job {job_id}: handed back, its message put back", requeue=True) from error


@worker_shutting_down.connect
def _hand_back_runs(how: str = "", **_: Any) -> None:
    # In the main process, from its signal handler: its first stop signal (a warm shutdown)
    # has every run hand its job back at its next check. A cold one kills them (cancel).
    if how == "Warm":
        stop_runs()


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
