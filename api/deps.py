"""FastAPI dependencies: settings, job store, Celery, the model-server client, auth."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.serving_client import ServingClient
from api.settings import GatewaySettings, get_settings
from fdl.jobs import JobStore

SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_serving(request: Request) -> ServingClient:
    return request.app.state.serving


def get_request_id(x_request_id: Annotated[str | None, Header()] = None) -> str:
    return x_request_id or uuid.uuid4().hex


StoreDep = Annotated[JobStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
ServingDep = Annotated[ServingClient, Depends(get_serving)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require_admin(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    token = _bearer_token(authorization)
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
            headers=unauthorized,
        )
    # Compare against every key, in constant time, so timing reveals nothing about the keys.
    matched = False
    for key in settings.admin_keys():
        matched |= hmac.compare_digest(token.encode(), key.encode())
    if not matched:
        raise ApiError(401, "unauthorized", "the API key is not valid", headers=unauthorized)
    return token


AdminDep = Annotated[str, Depends(require_admin)]
