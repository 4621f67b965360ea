"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import RedisDep, ServingDep

router = APIRouter(tags=["operations"])
# How long /readyz waits for Redis's PING (a LAN round trip is well under a millisecond), so a
# hung Redis makes the gateway not ready in about a second, not after the client's socket timeout
# (5 s). redis-py disconnects the connection of a PING cut short: the pool stays sound.
READY_REDIS_TIMEOUT_S = 1.0
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
    # Both at once: the answer takes the slower probe's time, not the sum.
    redis_check, serving_ok = await asyncio.gather(_redis_check(redis), serving.ping())
    checks = {"redis": redis_check, "model_server": "ok" if serving_ok else "unavailable"}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def _redis_check(redis: aioredis.Redis) -> str:
    try:
        async with asyncio.timeout(READY_REDIS_TIMEOUT_S):
            await redis.ping()
    except Exception as error:  # any failure (TimeoutError: no answer in time) means not ready
        return f"error: {type(error).__name__}"
    return "ok"


@router.head("/metrics", response_class=Response, include_in_schema=False)
@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
