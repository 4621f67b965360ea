"""Training jobs: submit, list, inspect, cancel, follow (server-sent events)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.admin_route import KeyFirstRoute
from api.bodies import JsonBodyDep
from api.deps import (
    AdminDep,
    CeleryDep,
    SettingsDep,
    StoreDep,
    StreamRedisDep,
    StreamSlotsDep,
)
from api.errors import STORE_RETRY_AFTER_S, ApiError, store_unavailable
from api.events import CappedEventSourceResponse, job_events, valid_stream_id
from api.jobs_snapshot import listed_by_status
from api.metrics import JOBS_SUBMITTED
from api.schemas import DECIMAL_ONLY, Job, JobId, JobList, errors
from api.settings import GatewaySettings
from api.submit_lock import submission_lock
from fdl.job_records import JOB_ID
from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=KeyFirstRoute)

PUBLIC_FIELDS = tuple(Job.model_fields)
QUEUE_FULL_RETRY_AFTER_S = 60
NOT_QUEUED = "the job could not be queued (the broker was unreachable); it was refused with 503"
# A submission whose message was sent confirms it in the job's record (``enqueued``: until then a
# worker's reaper would end the job instead of sending it again), trying again while Redis is
# unreachable but starting no try later than this after the first (a Redis that hangs costs one
# store timeout, not several).
CONFIRM_WITHIN_S = 1.0
# The plain GET routes also answer HEAD (health checkers, curl -I): the same status and headers,
# no body (the server sends none). Left out of the OpenAPI document, which lists the GETs. The
# event stream does not: it never ends while the job runs.

log = logging.getLogger("fdl.gateway")


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record's public fields (its id is the key's it was read from: fdl.job_reads)."""
    return {k: record.get(k) for k in PUBLIC_FIELDS}


def listed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The public fields of the records of a listing, less those whose id is no job id (the UI
    builds URLs from the ids listed; only a hand-edited Redis holds such a record), logged."""
    shown = []
    for record in records:
        job_id = record.get("id")
        if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
            shown.append(public(record))
        else:
            log.warning(
                "a job record holds an id that is no job id (%s): left out of the listing",
                repr(job_id)[:100],
            )
    return shown


@router.post(
    "",
    status_code=202,
    summary="Submit a training job",
    response_model=Job,
    responses=errors(401, 403, 415, 422, 429, 503),
)
def submit_job(
    _json: JsonBodyDep,
    spec: JobSpec,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    _key: AdminDep,
) -> dict[str, Any]:
    from kombu.exceptions import KombuError  # with Celery: imported on first submission only

    from fdl.queue import enqueue_training

    job_id = new_job_id()
    try:
        if settings.max_queued_jobs:
            record = _create_within_cap(store, spec, job_id, settings)
        else:
            queue = settings.training_queue
            record = store.create(spec.model_dump(), job_id, queue, unconfirmed=True)
    except (RedisError, OSError) as error:
        raise store_unavailable(error) from error
    try:
        enqueue_training(celery, job_id, settings.training_queue, spec.max_duration_s)
    except (RedisError, OSError, KombuError) as error:
        _end_not_queued(store, job_id)
        raise store_unavailable(error) from error
    _confirm_sent(store, job_id)
    JOBS_SUBMITTED.labels(spec.model).inc()
    return public(record)


def _end_not_queued(store: JobStore, job_id: str) -> None:
    """End the record of a job whose message the broker refused: not acknowledged, so never to
    run, it must not wait as queued (best effort; the broker and the store are one Redis). When
    this fails too, the record stays queued but unconfirmed, and a worker's reaper ends it once
    its message would be sent again, never sending it."""
    try:
        store.finish(job_id, JobStatus.FAILED, error=NOT_QUEUED)
    except (RedisError, OSError) as error:
        log.warning(
            "job %s could not be queued and its record could not be ended failed (%r): it stays "
            "queued, unconfirmed, until a worker's reaper ends it (FDL_RESEND_QUEUED_AFTER_S)",
            job_id,
            error,
        )


def _confirm_sent(store: JobStore, job_id: str) -> None:
    """Confirm in the job's record that its message was sent, trying again (tenacity, as the
    workers' store does) while Redis is unreachable, starting no try later than CONFIRM_WITHIN_S
    after the first. When no try gets through, the submission is still accepted (logged): its
    message is in the queue and a worker's claim takes the job. 503 when the reaper ended the job
    first, for want of this confirmation (its message is then skipped), or its record is gone."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

    retrying = Retrying(
        retry=retry_if_exception_type((RedisError, OSError)),
        stop=stop_after_delay(CONFIRM_WITHIN_S),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        reraise=True,
    )
    try:
        confirmed = retrying(store.confirm_sent, job_id)
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
    store: JobStore, spec: JobSpec, job_id: str, settings: GatewaySettings
) -> dict[str, Any]:
    """Count the jobs waiting in the gateway's queue and, below FDL_MAX_QUEUED_JOBS, write the
    job's record, holding the queue's submission lock (429 queue_full at the cap, 503
    job_store_busy when the lock stays taken; RedisError when Redis is unreachable)."""
    queue, cap = settings.training_queue, settings.max_queued_jobs
    with submission_lock(store, queue):
        waiting = store.waiting(queue)
        if waiting >= cap:
            raise ApiError(
                429,
                "queue_full",
                f"{waiting} jobs already wait in queue {queue!r} (FDL_MAX_QUEUED_JOBS={cap}); "
                "submit again once some have started",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )
        return store.create(spec.model_dump(), job_id, queue, unconfirmed=True)


@router.head("", response_model=JobList, include_in_schema=False)
@router.get(
    "",
    summary="List jobs, newest first",
    response_model=JobList,
    responses=errors(401, 403, 422, 429, 503),
)
async def list_jobs(
    store: StoreDep,
    _key: AdminDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500), DECIMAL_ONLY] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000), DECIMAL_ONLY] = 0,
) -> dict[str, Any]:
    if status is None:
        records, total = await run_in_threadpool(store.list, None, limit, offset)
    else:
        # Ids from the shared status snapshot (api/jobs_snapshot.py), records read fresh.
        records, total = await listed_by_status(store, status.value, limit, offset)
    return {"jobs": listed(records), "total": total, "limit": limit, "offset": offset}


def _get_or_404(store: JobStore, job_id: str) -> dict[str, Any]:
    record = store.get(job_id)
    # A record without a status is no job: what a late progress report or heartbeat leaves of
    # a pruned one (its fields set on the deleted key).
    if record is None or record.get("status") is None:
        raise _not_found(job_id)
    return record


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job with id {job_id!r}")


@router.head("/{job_id}", response_model=Job, include_in_schema=False)
@router.get(
    "/{job_id}",
    summary="One job with its progress and result",
    response_model=Job,
    responses=errors(401, 403, 404, 429, 503),
)
def get_job(job_id: JobId, store: StoreDep, _key: AdminDep) -> dict[str, Any]:
    return public(_get_or_404(store, job_id))


@router.delete(
    "/{job_id}",
    summary="Cancel a job (a queued job at once; a running one within 16 batches)",
    response_model=Job,
    responses=errors(401, 403, 404, 429, 503),
)
async def cancel_job(job_id: JobId, store: StoreDep, _key: AdminDep) -> dict[str, Any]:
    await run_in_threadpool(_get_or_404, store, job_id)
    record = await run_in_threadpool(store.request_cancel, job_id)
    if record is None:  # pruned meanwhile
        raise _not_found(job_id)
    return public(record)


@router.get(
    "/{job_id}/events",
    summary="Follow a job: server-sent events (status, progress) ending after the last status",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "text/event-stream; each event has an id usable as Last-Event-ID",
            "content": {
                "text/event-stream": {
                    "example": 'id: 1764345600000-0\nevent: progress\ndata: {"epoch": 1}\n\n'
                }
            },
        },
        **errors(401, 403, 404, 422, 429),
        503: {
            **errors(503)[503],
            "description": "The job store (Redis) is unavailable, or `too_many_streams`: this "
            "gateway already serves FDL_MAX_EVENT_STREAMS event streams (see Retry-After)",
        },
    },
)
async def job_event_stream(
    job_id: JobId,
    store: StoreDep,
    redis: StreamRedisDep,
    slots: StreamSlotsDep,
    _key: AdminDep,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this event id (SSE reconnection)")
    ] = None,
) -> EventSourceResponse:
    after = "0-0"
    if last_event_id:
        if not valid_stream_id(last_event_id.strip()):
            raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must look like 123-0")
        after = last_event_id.strip()
    await run_in_threadpool(_get_or_404, store, job_id)
    # The streams' own Redis client and cap (api/events.py): past FDL_MAX_EVENT_STREAMS open
    # streams, 503 too_many_streams before anything is sent.
    return CappedEventSourceResponse(
        job_events(redis, job_id, after), slots, ping=15, headers={"Cache-Control": "no-store"}
    )
