"""Training jobs: submit, list, inspect, cancel, follow (server-sent events)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, CeleryDep, RedisDep, SettingsDep, StoreDep
from api.errors import ApiError, store_unavailable
from api.events import job_events, valid_stream_id
from api.metrics import JOBS_SUBMITTED
from api.schemas import Job, JobId, JobList, errors
from fdl.jobs import JobStatus, JobStore, new_job_id
from fdl.jobspec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

PUBLIC_FIELDS = tuple(Job.model_fields)
QUEUE_FULL_RETRY_AFTER_S = 60
NOT_QUEUED = "the job could not be queued (the broker was unreachable); it was refused with 503"
# The plain GET routes also answer HEAD (health checkers, curl -I): the same status and headers,
# no body (the server sends none). Left out of the OpenAPI document, which lists the GETs. The
# event stream does not: it never ends while the job runs.


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in PUBLIC_FIELDS}


@router.post(
    "",
    status_code=202,
    summary="Submit a training job",
    response_model=Job,
    responses=errors(401, 403, 422, 429, 503),
)
def submit_job(
    spec: JobSpec, store: StoreDep, celery: CeleryDep, settings: SettingsDep, _key: AdminDep
) -> dict[str, Any]:
    from kombu.exceptions import KombuError  # with Celery: imported on first submission only

    from fdl.queue import enqueue_training

    if settings.max_queued_jobs:
        try:
            waiting = store.waiting(settings.training_queue)
        except (RedisError, OSError) as error:
            raise store_unavailable(error) from error
        if waiting >= settings.max_queued_jobs:
            raise ApiError(
                429,
                "queue_full",
                f"{waiting} jobs already wait in queue {settings.training_queue!r} "
                f"(FDL_MAX_QUEUED_JOBS={settings.max_queued_jobs}); submit again once some "
                "have started",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )
    job_id = new_job_id()
    try:
        record = store.create(spec.model_dump(), job_id, settings.training_queue)
    except (RedisError, OSError) as error:
        raise store_unavailable(error) from error
    try:
        enqueue_training(celery, job_id, settings.training_queue, spec.max_duration_s)
    except (RedisError, OSError, KombuError) as error:
        # Not acknowledged, so never to run: the record must not wait as queued for a message
        # that was never sent (best effort; the broker and the store are one Redis).
        with contextlib.suppress(RedisError, OSError):
            store.finish(job_id, JobStatus.FAILED, error=NOT_QUEUED)
        raise store_unavailable(error) from error
    JOBS_SUBMITTED.labels(spec.model).inc()
    return public(record)


@router.head("", response_model=JobList, include_in_schema=False)
@router.get(
    "",
    summary="List jobs, newest first",
    response_model=JobList,
    responses=errors(401, 403, 422, 429, 503),
)
def list_jobs(
    store: StoreDep,
    _key: AdminDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    records, total = store.list(status.value if status else None, limit, offset)
    return {"jobs": [public(r) for r in records], "total": total, "limit": limit, "offset": offset}


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
        **errors(401, 403, 404, 422, 429, 503),
    },
)
async def job_event_stream(
    job_id: JobId,
    store: StoreDep,
    redis: RedisDep,
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
    stream = job_events(redis, job_id, after)
    return EventSourceResponse(stream, ping=15, headers={"Cache-Control": "no-store"})
