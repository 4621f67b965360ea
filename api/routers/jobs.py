"""Training jobs: submit, inspect, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, CeleryDep, SettingsDep, StoreDep
from api.errors import ApiError
from api.metrics import JOBS_SUBMITTED
from fdl.jobs import JobStatus, new_job_id
from fdl.jobspec import JobSpec
from fdl.queue import enqueue_training

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

PUBLIC_FIELDS = (
    "id",
    "status",
    "spec",
    "progress",
    "result",
    "error",
    "created_at",
    "started_at",
    "finished_at",
    "attempts",
)


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in PUBLIC_FIELDS}


@router.post("", status_code=202, summary="Submit a training job")
def submit_job(
    spec: JobSpec, store: StoreDep, celery: CeleryDep, settings: SettingsDep, _key: AdminDep
) -> dict[str, Any]:
    job_id = new_job_id()
    record = store.create(spec.model_dump(), job_id)
    enqueue_training(celery, job_id, settings.training_queue)
    JOBS_SUBMITTED.labels(spec.model).inc()
    return public(record)


@router.get("", summary="List jobs, newest first")
def list_jobs(
    store: StoreDep,
    _key: AdminDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    records, total = store.list(status.value if status else None, limit, offset)
    return {"jobs": [public(r) for r in records], "total": total, "limit": limit, "offset": offset}


def _get_or_404(store, job_id: str) -> dict[str, Any]:
    record = store.get(job_id)
    if record is None:
        raise ApiError(404, "job_not_found", f"no job with id {job_id!r}")
    return record


@router.get("/{job_id}", summary="One job with its progress and result")
def get_job(job_id: str, store: StoreDep, _key: AdminDep) -> dict[str, Any]:
    return public(_get_or_404(store, job_id))


@router.delete("/{job_id}", summary="Cancel a job (cooperative: it stops at the next batch)")
async def cancel_job(job_id: str, store: StoreDep, _key: AdminDep) -> dict[str, Any]:
    await run_in_threadpool(_get_or_404, store, job_id)
    record = await run_in_threadpool(store.request_cancel, job_id)
    return public(record or {})
