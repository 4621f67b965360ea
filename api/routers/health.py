"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ServingDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis and the model server answer")
async def readyz(store: StoreDep, serving: ServingDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(store.ping)
        checks["redis"] = "ok"
    except Exception as error:  # any failure means not ready; say which
        checks["redis"] = f"error: {type(error).__name__}"
    checks["model_server"] = "ok" if await serving.ping() else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
