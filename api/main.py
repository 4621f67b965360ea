"""Assembles the gateway: settings, shared clients, middleware, routers, error handlers.

To add a router (e.g. the web UI), append it to ``ROUTERS``; classification must stay before
models, because ``/{model}/labels/{label}`` would otherwise swallow ``...:classify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY

from api.auth import Keyring
from api.budget import Budget
from api.coalesce import PredictCoalescer
from api.decoding import DecodeLimits
from api.docs import install_docs
from api.errors import install_error_handlers
from api.events import StreamSlots, stream_redis
from api.fastpath import FastPathMiddleware
from api.image_open import set_max_pixels
from api.logs import configure_logging
from api.metadata_cache import MetadataCache
from api.metrics import JobsCollector
from api.middleware import GatewayMiddleware
from api.promotion import Promoter
from api.ratelimit import FailOpen, FailureLimiter, RateLimiter
from api.redis_health import log_eviction_policy
from api.replica_sync import ReplicaSync
from api.repository_access import recover_at_start
from api.routers import classify, health, jobs, models, ui
from api.serving_client import ServingClient
from api.serving_tls import TLS
from api.settings import GatewaySettings, get_settings
from fdl.jobs import JobStore

ROUTERS: list[APIRouter] = [
    classify.router,  # first: the hot path, matched without trying the others' routes
    health.router,
    jobs.router,
    models.router,
    ui.router,
]

DESCRIPTION = """
Train the models of *Fundamentals of Deep Learning* and classify images with them.

* **Classify**: `POST /v1/models/{model}:classify` with multipart `file` parts or JSON
  `{"instances": [{"b64": "..."}], "top_k": 3}`. The gateway reads each model's input spec from
  the model server and normalizes images (digit or photo profile).
* **Jobs** (admin key): submit training jobs, follow them with server-sent events.
* **Models**: versions, status, metrics; promote versions with labels (admin key).

Authenticate with `Authorization: Bearer <key>`. Errors are `{"error": {"code", "message"}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: GatewaySettings = app.state.settings
    redis_url = settings.require_redis_url()
    store_timeout_s = settings.job_store_timeout_s
    app.state.store = JobStore(
        redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_timeout=store_timeout_s,
            socket_connect_timeout=store_timeout_s,
        )
    )
    # /readyz and the rate limits; job event streams read through their own pool, so open
    # streams never take these connections (api/events.py).
    app.state.redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app.state.stream_redis = stream_redis(redis_url, settings.max_event_streams)
    app.state.stream_slots = StreamSlots(settings.max_event_streams)
    app.state.celery = None  # built on first job submission (api.deps.celery_app)
    app.state.keyring = Keyring.from_settings(settings)
    # Both limits fail open together: one deadline per check, one back-off while Redis fails.
    fail_open = FailOpen(settings.rate_limit_timeout_s, settings.rate_limit_backoff_s)
    app.state.limiter = RateLimiter(
        app.state.redis, settings.rate_limit_per_minute, settings.rate_limit_burst, fail_open
    )
    app.state.auth_failures = FailureLimiter(
        RateLimiter(
            app.state.redis,
            settings.auth_failures_per_minute,
            settings.auth_failures_burst,
            fail_open,
        )
    )
    app.state.serving = ServingClient(
        settings.serving_target,
        settings.predict_timeout_s,
        metadata_timeout_s=settings.metadata_timeout_s,
        tls=TLS.from_settings(settings),
    )
    app.state.predictor = PredictCoalescer(
        app.state.serving, settings.max_batch_size, settings.predict_max_in_flight
    )
    app.state.metadata = MetadataCache(
        app.state.serving, settings.metadata_cache_s, model_dir=settings.model_dir
    )
    app.state.decode_limits = DecodeLimits.from_settings(settings)
    app.state.promoter = Promoter(
        app.state.serving,
        app.state.metadata,
        settings.model_dir,
        settings.serving_model_base_path,
        settings.promote_timeout_s,
        tls=TLS.from_settings(settings),
    )
    recovered = await asyncio.to_thread(recover_at_start, app.state.promoter.repository)
    collector = JobsCollector(app.state.store)
    REGISTRY.register(collector)  # before the tasks: nothing between them and the try may raise
    restoring = None
    if recovered:
        # In the background: the model servers may still be starting.
        restoring = asyncio.create_task(app.state.promoter.send_restored())
    # An evicting Redis is logged (in the background: start-up never waits for Redis).
    policy_check = asyncio.create_task(log_eviction_policy(app.state.redis))
    app.state.replica_sync = ReplicaSync(
        app.state.promoter, settings.replica_sync_s, settings.metadata_timeout_s
    )
    app.state.replica_sync.start()
    # What start-up built lives as long as the process: keep it out of the garbage collector's
    # full passes, which would otherwise walk it again and again under load (docs/gateway.md,
    # Benchmarks).
    gc.freeze()
    try:
        yield
    finally:
        policy_check.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await policy_check
        if restoring is not None:
            restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restoring
        await app.state.replica_sync.stop()
        REGISTRY.unregister(collector)
        await app.state.serving.close()
        await app.state.redis.aclose()
        await app.state.stream_redis.aclose()
        app.state.store.redis.close()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_keys()  # a placeholder or short API key: no app (WeakKeyError)
    set_max_pixels(settings.max_image_pixels)
    app = FastAPI(
        title="FDL Serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs: no CDN, works offline
        redoc_url=None,
        # No 307 from "/v1/jobs/" to "/v1/jobs": Starlette builds its Location from the client's
        # Host header, and sends no body. Such paths get the usual 404.
        redirect_slashes=False,
    )
    app.state.settings = settings
    install_error_handlers(app)
    if settings.classify_fast_path:
        # Added first, so it runs inside GatewayMiddleware: ids, limits, logs and metrics stay.
        app.add_middleware(FastPathMiddleware, routes=classify.fast_routes())
    app.add_middleware(
        GatewayMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_budget=Budget(
            "body", settings.body_budget_bytes, settings.decode_wait_s, "request-body bytes"
        ),
        body_free_bytes=settings.body_free_bytes,
        allowed_hosts=settings.allowed_host_names,
    )
    for router in ROUTERS:
        app.include_router(router)
    ui.mount_static(app)
    install_docs(app)
    return app


def make_app() -> FastAPI:
    """The process's app (``fdl-gateway``): logging configured first."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
