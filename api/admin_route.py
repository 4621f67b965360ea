"""Keyed JSON routes: the key is checked before the body is read, and the body has a small limit.

FastAPI reads and parses a route's JSON body before it solves any dependency, the key check
among them: an anonymous client could make the gateway parse (and validate) megabytes of JSON
for the 401 it would get anyway. On a route with a body, :class:`KeyFirstRoute` runs the
route's own key check (the :class:`api.deps.KeyCheck` of its ``AdminDep`` or ``ClassifyDep``)
on the headers first, so a request without a right key gets its 401, 403 or 429 before a byte of
the body is read; the dependency then hands on the identity found, without checking the key or
counting it against the limits again. A request that passes may send at most
``FDL_MAX_JSON_BODY_BYTES`` (a job spec or a label change is a few hundred bytes), counted by
:mod:`api.middleware` as the body streams (413 ``body_too_large``, from ``Content-Length``
before anything is read).

Routes without a body are left as FastAPI builds them (FastAPI reads no body for them), and so
is the OpenAPI document: routes, parameters, bodies and security are FastAPI's own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api.deps import KeyCheck
from api.middleware import ROUTE_BODY_LIMIT
from api.settings import GatewaySettings

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def key_check_of(dependant: Dependant) -> KeyCheck | None:
    """The key check among a route's own dependencies (``AdminDep``, ``ClassifyDep``)."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, KeyCheck):
            return dependency.call
    return None


class KeyFirstRoute(APIRoute):
    """An ``APIRoute`` that, when it has a body and a key check, checks the key before FastAPI
    reads the body, then lowers the body limit to ``FDL_MAX_JSON_BODY_BYTES``."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        check = key_check_of(self.dependant) if self.body_field is not None else None
        if check is None:
            return handler

        async def key_first(request: Request) -> Response:
            await check.check_first(request)
            settings: GatewaySettings = request.app.state.settings
            request.scope[ROUTE_BODY_LIMIT] = settings.max_json_body_bytes
            return await handler(request)

        return key_first
