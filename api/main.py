"""Assembles the gateway: settings, shared clients, routers, error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routers import classify, health, jobs
from api.serving_client import ServingClient
from api.settings import get_settings
from fdl.jobs import JobStore
from fdl.queue import make_celery


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    redis_url = settings.require_redis_url()
    app.state.store = JobStore.from_url(redis_url)
    app.state.celery = make_celery(redis_url, settings.training_queue)
    app.state.serving = ServingClient(settings.serving_target, settings.predict_timeout_s)
    yield
    await app.state.serving.close()
    app.state.store.redis.close()


def create_app() -> FastAPI:
    app = FastAPI(
        title="FDL Serve",
        version="0.1.0",
        description="Train the models of Fundamentals of Deep Learning and classify images.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(classify.router)
    return app


app = create_app()
