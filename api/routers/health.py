"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import RedisDep, ServingDep
from api.redis_health import shared_probe

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
    """200 ``ready``; 200 ``degraded`` while Redis answers but refuses writes (classification
    needs none: api/redis_health.py); 503 ``not_ready`` while Redis is unreachable or the model
    server does not answer. ``warnings``: an evicting Redis (fdl/redis_policy.py)."""
    # Both at once: the answer takes the slower probe's time, not the sum.
    health, serving_ok = await asyncio.gather(shared_probe(redis), serving.ping())
    checks = {"redis": health.check, "model_server": "ok" if serving_ok else "unavailable"}
    ready = health.reachable and serving_ok
    status = "not_ready" if not ready else "ready" if health.check == "ok" else "degraded"
    warnings = [health.warning] if health.warning else []
    return JSONResponse(
        {"status": status, "checks": checks, "warnings": warnings},
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
