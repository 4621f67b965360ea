"""Find jobs whose worker died (SIGKILL, OOM, lost node) and run them again, or fail them.

With the Redis broker an unacknowledged message comes back only after the visibility timeout
(hours), so a job whose worker was killed would stay ``running`` that long. Each running job's
record carries a heartbeat (refreshed by a thread of the process that trains it); every worker
checks at start-up and then periodically for running jobs whose heartbeat is older than
``FDL_STALE_AFTER_S``, moves them back to ``queued`` atomically (one reaper wins) and re-sends
the task to the queue the job was sent to (a GPU job found by a CPU worker's reaper goes back to
the GPU queue; a record written before records kept their queue goes to the reaper's own), or
ends them ``failed`` with the reason once ``FDL_MAX_ATTEMPTS`` runs were lost (``cancelled`` when
a cancel was requested, ``succeeded`` when the run had published): one script decides and
applies which (:meth:`fdl.jobs.JobStore.settle_lost`). It decides only while it holds the model
repository's lock (:func:`training.publish.fence`), and leaves every lost job for its next pass
when another process holds it: a run whose heartbeat went stale may only be paused, between its
record's last check and its version's rename, which it makes under that lock.
A reaper judges runs lost only once Redis has answered it and taken its writes without a break
for a grace (two heartbeat intervals and a margin, :mod:`training.redis_watch`), from its start
and after every outage or refusal of writes it saw: a heartbeat gap that either explains is no
lost run. A settling that Redis refuses or fails ends the pass, the lock given back at once, and
a later pass judges again from fresh heartbeats: no outage is waited out on a judgement made
before it.

Queued jobs are watched too: a message can be lost before a worker ever holds it (the gateway
stopped between writing the record and sending it; the broker lost it). A job of this worker's
queue (the record keeps the queue it was sent to) still queued ``FDL_RESEND_QUEUED_AFTER_S``
after its message was sent has it sent again; a worker that gets a duplicate of a job already
taken or ended skips it (the claim is atomic). A job whose message the gateway never confirmed
sent (the record's ``enqueued`` is false: the broker refused it, and the gateway answered 503
but could not end the record) is ended ``failed`` at that point instead, so that a job refused
to its client never runs (:meth:`fdl.jobs.JobStore.resend_or_end`).

A message sent again carries the spec's ``max_duration_s``, as the gateway's does, so that the
hard time limit of the run it starts is the spec's (:data:`Send`).

Each pass also removes the checkpoints (``FDL_CHECKPOINT_DIR``) of jobs that ended or whose
record is gone, and the temporary folders of checkpoint writes that died
(:func:`training.checkpoint_files.sweep`).

A pruned job's TensorBoard folder goes with its record, and the hourly sweep also removes those
that other workers' prunes or older versions left (:mod:`training.tensorboard_dirs`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from filelock import Timeout

from fdl.job_records import resend_due
from fdl.jobs import JobStatus, JobStore
from fdl.store_retry import CONNECTION_ERRORS, TRANSIENT_ERRORS, retrying_only
from training.checkpoint_files import sweep as sweep_checkpoints
from training.publish import fence, published_by_record, render_config_again
from training.redis_watch import RedisWatch
from training.settings import WorkerSettings
from training.tensorboard_dirs import remove_tensorboard_dirs, sweep_tensorboard_dirs

log = logging.getLogger(__name__)
# Sends a job's message again: (job id, queue, its spec's ``max_duration_s`` or None), the one
# spec field the message carries (fdl.queue.enqueue_training with the app bound).
Send = Callable[[str, str, float | None], None]

# How often a reaper thread looks for what older workers left of pruned jobs (at start-up, then
# this often): it scans every key of Redis, and nothing today leaves such keys.
LEFTOVER_SWEEP_EVERY_S = 3600.0
# How long a settling whose connection broke is tried again (its reply may be lost), not refused.
SETTLE_RETRY_S = 2.0


def reap_once(
    store: JobStore,
    settings: WorkerSettings,
    send: Send,
    sweep_leftovers: bool = True,
    watch: RedisWatch | None = None,
) -> list[tuple[str, str]]:
    """One pass; returns (job id, "requeued" | "succeeded" | "failed" | "cancelled" | "resent" |
    "pruned") for every job it acted on ("failed" also for a queued job whose message was never
    confirmed sent). A lost job that already published its version (the
    worker died between the rename and recording it) ends ``succeeded`` with that version.
    ``sweep_leftovers`` also removes, past the retention, what older workers left of pruned
    jobs (:meth:`fdl.jobs.JobStore.prune_leftovers`: a pass over every Redis key, so the
    reaper thread asks for it once an hour). With ``watch`` (the reaper thread's), no run is
    judged lost before Redis has answered for :func:`training.redis_watch.outage_grace_s`.
    A settling that Redis refused or failed (:func:`settle_lost_run`) ends the pass, raised, and
    restarts the watch's count."""
    now = (watch or store).now()  # Redis's clock, which every heartbeat is written by
    threshold = now - settings.stale_after_s
    running: list[dict[str, Any]] = []
    if watch is None or watch.judging():
        running, _total = store.list(status=JobStatus.RUNNING.value, limit=100_000)
    actions: list[tuple[str, str]] = []
    for record in running:
        beat = float(record.get("heartbeat_at") or record.get("started_at") or 0)
        if beat >= threshold:
            continue
        reason = f"worker {record.get('worker')} lost: no heartbeat for {now - beat:.0f}s"
        try:
            status = settle_lost_run(store, settings, record, threshold, reason, send)
        except redis.exceptions.RedisError as error:
            if watch is not None:
                watch.unreachable(error)
            raise
        if status is BUSY:
            break  # the lock is held: every lost job waits for the next pass
        if status is None:
            continue  # it beat again, finished, or another reaper took it
        # succeeded (published), cancelled (requested while it ran), failed (giving up)
        actions.append((record["id"], "requeued" if status == JobStatus.QUEUED else status))
    waiting = _resend_waiting(store, now, settings, send)
    pruned: list[str] = []
    if settings.job_retention_s > 0:
        pruned = store.prune(now - settings.job_retention_s)
        if pruned:
            log.info("removed the records of %d jobs that ended long ago", len(pruned))
        if sweep_leftovers:
            leftovers = store.prune_leftovers(now - settings.job_retention_s)
            if leftovers:
                log.info("removed what older workers left of %d pruned jobs", len(leftovers))
            pruned += leftovers
        remove_tensorboard_dirs(settings.var_dir, pruned)
        if sweep_leftovers:
            sweep_tensorboard_dirs(store, settings.var_dir, settings.job_retention_s)
    sweep_checkpoints(store, settings.checkpoint_root)  # of jobs ended or gone; never a live one
    return actions + waiting + [(job_id, "pruned") for job_id in pruned]


# What :func:`settle_lost_run` answers when the repository's lock is held.
BUSY = "busy"


def settle_lost_run(
    store: JobStore,
    settings: WorkerSettings,
    record: dict[str, Any],
    threshold: float,
    reason: str,
    send: Send,
) -> str | None:
    """Settle the running job of ``record``, whose run is lost (its heartbeat is older than
    ``threshold``, epoch seconds) for ``reason`` (:func:`_settle`), and send its message again
    when it went back to ``queued``: the one path by which a lost run's job is run again, from a
    reaper's pass and from a worker whose pool process died (:mod:`training.lost_process`), so
    that its next claim counts the next attempt and ``FDL_MAX_ATTEMPTS`` holds. The status the
    job was left in, None when nothing changed, :data:`BUSY` when the lock is held."""
    status = _settle(store, settings, record, threshold, reason)
    if status == JobStatus.QUEUED:
        job_id, attempts = record["id"], int(record.get("attempts") or 0)
        log.warning("%s; re-enqueueing job %s (attempt %d)", reason, job_id, attempts + 1)
        queue = record.get("queue") or settings.training_queue
        send(job_id, queue, spec_max_duration_s(record))
    return status


def _settle(
    store: JobStore, settings: WorkerSettings, record: dict[str, Any], threshold: float, reason: str
) -> str | None:
    """Decide what becomes of a lost running job under the repository's lock (:func:`fence`):
    its run may only be paused, between its record's last check and its version's rename, and
    must then either have published (found here) or publish nothing. The status the job was
    left in; None when nothing changed; :data:`BUSY` when the lock is held (by such a run, a
    publish or a promotion; never by a dead process), so that the job waits for a later pass.
    A Redis error is raised with the lock given back, never waited out under it with
    ``threshold`` judged before (a broken connection is tried again for :data:`SETTLE_RETRY_S`)."""
    job_id, attempts = record["id"], int(record.get("attempts") or 0)
    give_up = None
    if attempts >= settings.max_attempts:
        give_up = f"{reason} (attempt {attempts} of {settings.max_attempts}); giving up"
    try:
        with fence(settings.model_dir, settings.serving_model_base_path) as held:
            # Lost after its version was renamed in: the job is done, whatever else applies.
            published = published_by_record(settings.model_dir, record)
            # One atomic step: a duplicate message never finds the job queued before it ends.
            with retrying_only(store, CONNECTION_ERRORS, SETTLE_RETRY_S):
                status = store.settle_lost(job_id, threshold, attempts, reason, published, give_up)
            if status == JobStatus.SUCCEEDED:
                render_config_again(settings.model_dir, None, job_id, held)
            return status
    except Timeout:
        why = "the model repository's lock is held (a publish, a promotion, a paused run)"
        log.warning("job %s is lost, but %s: lost jobs wait for the next pass", job_id, why)
    except OSError:
        log.exception("job %s is lost, but the model repository's lock cannot be taken", job_id)
    return BUSY


def _resend_waiting(
    store: JobStore, now: float, settings: WorkerSettings, send: Send
) -> list[tuple[str, str]]:
    """Send again the message of every job of the queue this worker consumes that is due for it
    (``FDL_RESEND_QUEUED_AFTER_S`` after its last send, doubling with each resend), or end it
    ``failed`` when its message was never confirmed sent; jobs of other queues are left to their
    own workers."""
    queue, after_s = settings.training_queue, settings.resend_queued_after_s
    queued, _total = store.list(status=JobStatus.QUEUED.value, limit=100_000)
    # A job that a process older than the queue sets queued (a rolling upgrade) is counted by
    # the queue cap from this pass on: a member that is not queued is only dropped by the count.
    store.track_queued(queue, [r["id"] for r in queued if r.get("queue") == queue])
    actions: list[tuple[str, str]] = []
    for record in queued:
        if record.get("queue") != queue or resend_due(record, after_s) > now:
            continue
        outcome = store.resend_or_end(record["id"], after_s)
        if outcome == "resent":
            log.warning("job %s is still queued; sending its message again", record["id"])
            send(record["id"], queue, spec_max_duration_s(record))
        elif outcome == "failed":
            log.warning("job %s was never confirmed queued; ended failed", record["id"])
        if outcome:
            actions.append((record["id"], outcome))
    return actions


def spec_max_duration_s(record: dict[str, Any] | None) -> float | None:
    """The ``max_duration_s`` of a job record's spec; None when it has none (or no record)."""
    spec = (record or {}).get("spec")
    limit = spec.get("max_duration_s") if isinstance(spec, dict) else None
    return limit if isinstance(limit, int | float) and not isinstance(limit, bool) else None


class ReaperThread(threading.Thread):
    def __init__(self, store: JobStore, settings: WorkerSettings, send: Send) -> None:
        super().__init__(name="fdl-reaper", daemon=True)
        self.store, self.settings, self.send = store, settings, send
        self.stopped = threading.Event()
        self.watch = RedisWatch(store, settings.heartbeat_interval_s)

    def run(self) -> None:
        next_sweep = 0.0
        while True:
            started = time.monotonic()
            try:
                sweep = started >= next_sweep
                reap_once(self.store, self.settings, self.send, sweep, self.watch)
                if sweep:
                    next_sweep = time.monotonic() + LEFTOVER_SWEEP_EVERY_S
            except redis.exceptions.RedisError as error:
                self.watch.unreachable(error)
                bug = not isinstance(error, TRANSIENT_ERRORS)  # else the watch said what it is
                log.warning("reaper pass stopped (%s); retrying later", error, exc_info=bug)
            except Exception:
                log.exception("reaper pass failed; retrying later")
            # Any of the pass's calls may have waited out an outage.
            self.watch.note(started, time.monotonic(), "a reaper pass")
            # A pass within the grace judged no run: the next one comes once the grace is over.
            pending_s = self.watch.grace_s - self.watch.reachable_s()
            wait_s = self.settings.reaper_interval_s
            if pending_s > 0:
                wait_s = min(wait_s, pending_s + 0.1)
            if self.watch.wait(wait_s, self.stopped):
                return
