"""Training jobs: submit, list, inspect, cancel, follow (server-sent events)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api import idempotency, job_submission
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
from api.errors import ApiError, store_unavailable
from api.events import CappedEventSourceResponse, job_events, valid_stream_id
from api.idempotency import REPLAY_RESPONSE, IdempotencyKey
from api.job_submission import CONFIRM_WITHIN_S, NOT_QUEUED
from api.jobs_snapshot import listed_by_status
from api.metrics import JOBS_SUBMITTED
from api.schemas import DECIMAL_ONLY, Job, JobId, JobList, errors
from fdl.job_records import JOB_ID
from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=KeyFirstRoute)

PUBLIC_FIELDS = tuple(Job.model_fields)
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
    responses={**REPLAY_RESPONSE, **errors(401, 403, 409, 415, 422, 429, 503)},
)
def submit_job(
    _json: JsonBodyDep,
    spec: JobSpec,
    request: Request,
    response: Response,
    store: StoreDep,
    celery: CeleryDep,
    settings: SettingsDep,
    key: AdminDep,
    _idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    from kombu.exceptions import KombuError  # with Celery: imported on first submission only

    from fdl.queue import enqueue_training

    abandon_after_s = idempotency.abandoned_after_s(settings.job_store_timeout_s, CONFIRM_WITHIN_S)
    job_id, claim = new_job_id(), idempotency.claim_of(request, key, spec, abandon_after_s)
    try:
        record = job_submission.create(store, spec, job_id, settings, claim)
    except (RedisError, OSError) as error:
        raise store_unavailable(error) from error
    if idempotency.mark_replayed(response, record, job_id):
        return public(record)
    try:
        enqueue_training(celery, job_id, settings.training_queue, spec.max_duration_s)
    except (RedisError, OSError, KombuError) as error:
        job_submission.end_not_sent(store, job_id, claim, NOT_QUEUED)
        raise store_unavailable(error) from error
    job_submission.confirm_sent(store, job_id)
    JOBS_SUBMITTED.labels(spec.model).inc()
    return public(record)


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
    request: Request,
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
    if (sent := len(request.headers.getlist("last-event-id"))) > 1:
        # Which one counts would depend on the reader: a proxy may resume from another.
        raise ApiError(
            422, "invalid_last_event_id", f"Last-Event-ID was sent {sent} times; send it once"
        )
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
