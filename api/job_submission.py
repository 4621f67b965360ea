"""The steps of ``POST /v1/jobs`` around the broker's send: the job's record written (under
FDL_MAX_QUEUED_JOBS, within the cap; under an Idempotency-Key, with its key:
:mod:`api.idempotency`), the send confirmed in the record, or the record ended when the job
could not be queued."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from api import idempotency
from api.errors import STORE_RETRY_AFTER_S, ApiError
from api.settings import GatewaySettings
from api.submit_lock import submission_lock
from fdl.job_idempotency import Claim, abandoned, end_not_queued
from fdl.jobs import JobStatus, JobStore
from fdl.jobspec import JobSpec
from fdl.store_retry import retrying_within

QUEUE_FULL_RETRY_AFTER_S = 60
NOT_QUEUED = "the job could not be queued (the broker was unreachable); it was refused with 503"
NOT_CREATED = (
    "the job could not be queued (Redis did not answer while its record was written); it was "
    "refused with 503"
)
# A submission whose message was sent confirms it in the job's record (``enqueued``: until then a
# worker's reaper would end the job instead of sending it again), trying again while Redis is
# unreachable but starting no try later than this after the first (a Redis that hangs costs one
# store timeout, not several).
CONFIRM_WITHIN_S = 1.0

log = logging.getLogger("fdl.gateway")


def create(
    store: JobStore, spec: JobSpec, job_id: str, settings: GatewaySettings, claim: Claim | None
) -> dict[str, Any]:
    """The new job's record (within FDL_MAX_QUEUED_JOBS when set: :func:`_create_within_cap`),
    or the record of the job that the claim's key names already (:func:`api.idempotency.answer`).
    When Redis fails (RedisError, OSError, raised on) under a key, the job that its create may
    have written nonetheless (its reply lost, or come after the store timeout) is ended and its
    key let go (:func:`end_not_queued`, best effort): nothing sent its message, so a retry under
    the key submits anew instead of waiting for it to count as abandoned."""
    try:
        if settings.max_queued_jobs:
            return _create_within_cap(store, spec, job_id, settings, claim)
        return idempotency.create(store, spec, job_id, settings.training_queue, claim)
    except (RedisError, OSError):
        if claim is not None:
            end_not_sent(store, job_id, claim, NOT_CREATED)
        raise


def end_not_sent(store: JobStore, job_id: str, claim: Claim | None, error: str) -> None:
    """End the record of a job whose message was never acknowledged by the broker (refused, or
    never sent): never to run, it must not wait as queued (best effort; the broker and the store
    are one Redis). Under an Idempotency-Key, a job still queued is ended and its key let go in
    one step (a job that does not exist is left so). When this fails too, the record stays
    queued unconfirmed (its key naming it: the message may have reached the queue), and a
    worker's reaper ends it once its message would be sent again, never sending it; or a retry
    under its key does, once abandoned (api/idempotency.py)."""
    try:
        if claim is None:
            store.finish(job_id, JobStatus.FAILED, error=error)
        else:
            end_not_queued(store, claim, job_id, error)
    except (RedisError, OSError) as failure:
        log.warning(
            "job %s could not be queued and its record could not be ended failed (%r): it stays "
            "queued, unconfirmed, until a worker's reaper ends it (FDL_RESEND_QUEUED_AFTER_S)",
            job_id,
            failure,
        )


def confirm_sent(store: JobStore, job_id: str) -> None:
    """Confirm in the job's record that its message was sent, trying again (tenacity, as the
    workers' store does) while Redis is unreachable, starting no try later than CONFIRM_WITHIN_S
    after the first. When no try gets through, the submission is still accepted (logged): its
    message is in the queue and a worker's claim takes the job. 503 when the job was ended
    first, for want of this confirmation (by the reaper, or a retry under its key that took it
    over; its message is then skipped), or its record is gone."""
    try:
        confirmed = retrying_within(CONFIRM_WITHIN_S, (RedisError, OSError))(
            store.confirm_sent, job_id
        )
    except (RedisError, OSError) as error:
        log.warning(
            "job %s was queued but its record could not confirm it (%r); should the broker "
            "lose its message, the job ends failed instead of being sent again",
            job_id,
            error,
        )
        return
    if not confirmed:
        raise ApiError(
            503,
            "job_store_unavailable",
            "the job could not be queued in time (its record was ended, or lost, before "
            "the gateway confirmed its message); submit it again",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        )


def _create_within_cap(
    store: JobStore, spec: JobSpec, job_id: str, settings: GatewaySettings, claim: Claim | None
) -> dict[str, Any]:
    """Count the jobs waiting in the gateway's queue (:meth:`fdl.jobs.JobStore.waiting`: the
    records of the jobs queued there only, not every record kept) and, below
    FDL_MAX_QUEUED_JOBS, write the job's record, holding the queue's submission lock (429
    queue_full at the cap, 503 job_store_busy when the lock stays taken; RedisError when Redis
    is unreachable). The job that the claim's Idempotency-Key names already is answered first,
    whatever the count: before the lock is taken (a replay never waits for it, nor fails with
    it), and again under it (a concurrent submission under the key may have created it
    meanwhile). At the cap, a job of the queue that the key names, abandoned, does not count:
    the create ends it as it writes the new one (under the lock, nothing else queues a job here
    meanwhile)."""
    queue, cap = settings.training_queue, settings.max_queued_jobs
    if (earlier := idempotency.replayed(store, claim, job_id)) is not None:
        return earlier
    with submission_lock(store, queue):
        if (earlier := idempotency.replayed(store, claim, job_id)) is not None:
            return earlier
        # Counted up to one past the cap: enough to know whether an abandoned job's end frees
        # a place, and no further.
        waiting = store.waiting(queue, up_to=cap + 1)
        told = f"more than {cap}" if waiting > cap else str(cap)
        if waiting >= cap and claim is not None and abandoned(store, claim, queue):
            waiting -= 1  # the create ends it
        if waiting >= cap:
            raise ApiError(
                429,
                "queue_full",
                f"{told} jobs already wait in queue {queue!r} (FDL_MAX_QUEUED_JOBS={cap}); "
                "submit again once some have started",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )
        return idempotency.create(store, spec, job_id, queue, claim)
