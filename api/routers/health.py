"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import RedisDep, ServingDep

router = APIRouter(tags=["operations"])
# Each route also answers HEAD (health checkers, curl -I): the same status and headers, no body
# (the server sends none). Left out of the OpenAPI document, which lists the GETs.


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", summary="The gateway process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    summary="Redis and the model server answer",
    responses={503: {"description": "Not ready; checks says which dependency failed"}},
)
async def readyz(redis: RedisDep, serving: ServingDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await redis.ping()
        checks["redis"] = "ok"
    except Exception as error:  # any failure means not ready; say which
        checks["redis"] = f"error: {type(error).__name__}"
    checks["model_server"] = "ok" if await serving.ping() else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.head("/metrics", response_class=Response, include_in_schema=False)
@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
