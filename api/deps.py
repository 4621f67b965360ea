"""FastAPI dependencies: the services start-up builds (settings, job store, Celery, the model-server
client and what wraps it), the request id, auth.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, a hop that
costs more than these attribute reads.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, cast

import redis.asyncio as aioredis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from starlette.datastructures import State

from api import auth
from api.decoding import DecodeLimits
from api.events import StreamSlots
from api.metadata_cache import MetadataCache
from api.promotion import Promoter
from api.serving_client import ServingClient
from api.settings import GatewaySettings
from fdl.jobs import JobStore

if TYPE_CHECKING:
    from celery import Celery

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


async def app_settings(request: Request) -> GatewaySettings:
    return cast("GatewaySettings", request.app.state.settings)


async def app_store(request: Request) -> JobStore:
    return cast("JobStore", request.app.state.store)


async def app_celery(request: Request) -> Celery:
    return celery_app(request.app.state)


async def app_serving(request: Request) -> ServingClient:
    return cast("ServingClient", request.app.state.serving)


async def app_metadata(request: Request) -> MetadataCache:
    return cast("MetadataCache", request.app.state.metadata)


async def app_decode_limits(request: Request) -> DecodeLimits:
    return cast("DecodeLimits", request.app.state.decode_limits)


async def app_promoter(request: Request) -> Promoter:
    return cast("Promoter", request.app.state.promoter)


async def app_redis(request: Request) -> aioredis.Redis:
    return cast("aioredis.Redis", request.app.state.redis)


async def stream_redis(request: Request) -> aioredis.Redis:
    """The job event streams' own client (api/events.py), never ``/readyz``'s or the limits'."""
    return cast("aioredis.Redis", request.app.state.stream_redis)


async def stream_slots(request: Request) -> StreamSlots:
    return cast("StreamSlots", request.app.state.stream_slots)


def celery_app(state: State) -> Celery:
    """The Celery client, built on first use: only job submission needs it (and its imports)."""
    app = getattr(state, "celery", None)
    if app is None:
        from fdl.queue import make_celery

        settings: GatewaySettings = state.settings
        app = state.celery = make_celery(
            settings.require_redis_url(),
            settings.training_queue,
            send_timeout_s=settings.job_store_timeout_s,  # a hung Redis: 503, not a hung request
        )
    return app


def request_id_of(request: Request) -> str:
    """Set by the request middleware (from ``x-request-id`` when it is sane, else new)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


async def get_request_id(request: Request) -> str:
    return request_id_of(request)


def sane_request_id(value: str | None) -> str:
    return value if value and _REQUEST_ID.match(value) else uuid.uuid4().hex


SettingsDep = Annotated[GatewaySettings, Depends(app_settings)]
StoreDep = Annotated[JobStore, Depends(app_store)]
ServingDep = Annotated[ServingClient, Depends(app_serving)]
MetadataDep = Annotated[MetadataCache, Depends(app_metadata)]
DecodeLimitsDep = Annotated[DecodeLimits, Depends(app_decode_limits)]
PromoterDep = Annotated[Promoter, Depends(app_promoter)]
RedisDep = Annotated[aioredis.Redis, Depends(app_redis)]
StreamRedisDep = Annotated[aioredis.Redis, Depends(stream_redis)]
StreamSlotsDep = Annotated[StreamSlots, Depends(stream_slots)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
if TYPE_CHECKING:
    CeleryDep = Annotated[Celery, Depends(app_celery)]
else:  # Celery is imported on first use only; FastAPI needs no type for a dependency
    CeleryDep = Annotated[object, Depends(app_celery)]


# The scope key under which a route that checked the key before reading its body
# (api/admin_route.py) keeps the check and the caller's identity.
KEY_CHECKED = "fdl.key_checked"


class KeyCheck(HTTPBearer):
    """The bearer scheme in the OpenAPI document, and the key and role check itself
    (:mod:`api.auth`) as the dependency: one level of dependencies on every request, not two."""

    def __init__(self, check: Callable[[Request], Awaitable[str]]) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="An API key: Authorization: Bearer <key>",
        )
        self.check = check

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        checked = request.scope.get(KEY_CHECKED)
        if checked is not None and checked[0] is self:
            return cast(str, checked[1])  # checked already by check_first: once per request
        return await self.check(request)

    async def check_first(self, request: Request) -> None:
        """The check, run before FastAPI reads the body (api/admin_route.py): its 401, 403 or
        429 is raised from here; on success the dependency returns the identity it found
        without checking (or counting against the limits) again."""
        request.scope[KEY_CHECKED] = (self, await self.check(request))


AdminDep = Annotated[str, Security(KeyCheck(auth.require_admin))]
ClassifyDep = Annotated[str, Security(KeyCheck(auth.require_classify))]
