"""FastAPI dependencies: settings, job store, Celery, the model-server client, auth."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import auth
from api.metadata_cache import MetadataCache
from api.serving_client import ServingClient
from api.settings import GatewaySettings
from fdl.jobs import JobStore

# Declares the scheme in the OpenAPI document; the check itself is in api.auth.
_bearer = HTTPBearer(auto_error=False, description="An API key: Authorization: Bearer <key>")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_serving(request: Request) -> ServingClient:
    return request.app.state.serving


def get_metadata(request: Request) -> MetadataCache:
    return request.app.state.metadata


def get_request_id(request: Request) -> str:
    """Set by the request middleware (from ``x-request-id`` when it is sane, else new)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def sane_request_id(value: str | None) -> str:
    return value if value and _REQUEST_ID.match(value) else uuid.uuid4().hex


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
ServingDep = Annotated[ServingClient, Depends(get_serving)]
MetadataDep = Annotated[MetadataCache, Depends(get_metadata)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


async def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    return await auth.require_admin(request)


async def require_classify(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    return await auth.require_classify(request)


AdminDep = Annotated[str, Depends(require_admin)]
ClassifyDep = Annotated[str, Depends(require_classify)]
