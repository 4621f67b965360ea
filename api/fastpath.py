"""A direct path for well-formed classify requests, past FastAPI's per-request machinery.

FastAPI answers every request through its exception and exit-stack middleware, a scan of the
routes, the included router, the route's request wrapper and the dependency solver: about 0.16 ms
of a classify request's latency at concurrency 1 on a 2-core VM, where everything runs with cold
caches (docs/gateway.md, "The classify fast path"). This middleware sits inside
:class:`api.middleware.GatewayMiddleware` (request ids, body limit, access log and metrics stay)
and serves a classify request itself when its path parameters are ones FastAPI would accept
unchanged; it calls the same auth dependency, the same ``Classifier`` and the app's own exception
handlers, and sets ``scope["route"]`` and ``scope["path_params"]`` as the router would. Anything
else (another route or method, a parameter FastAPI would reject or convert) goes on to FastAPI, so
every error keeps FastAPI's exact answer. The routes themselves stay registered: OpenAPI and the
docs do not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

# The target a route's raw path parameters name, or None where FastAPI should judge them.
ParseParams = Callable[[dict[str, str]], Any]


@dataclass(frozen=True)
class FastRoute:
    route: BaseRoute  # the registered route: its ``path`` labels metrics and access logs
    parse: ParseParams
    serve: Callable[[Request, Any], Awaitable[Response]]


class FastPathMiddleware:
    """Serve ``POST`` requests to ``routes`` directly; pass everything else to ``app``."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = [(r, r.route.path_regex) for r in routes]  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for fast, regex in self.routes:
                match = regex.match(path)
                if match is None:
                    continue
                if b"%" in scope.get("raw_path", b""):
                    break  # FastAPI's routes tell an encoded colon (%3A) from a custom method's
                params = match.groupdict()
                target = fast.parse(params)
                if target is None:
                    break
                scope["route"] = fast.route
                scope["endpoint"] = fast.route.endpoint  # type: ignore[attr-defined]
                scope["path_params"] = params
                await _respond(scope, receive, send, fast, target)
                return
        await self.app(scope, receive, send)


async def _respond(
    scope: Scope, receive: Receive, send: Send, fast: FastRoute, target: Any
) -> None:
    request = Request(scope, receive, send)
    try:
        response = await fast.serve(request, target)
    except Exception as error:
        # The app's handlers for what FastAPI's ExceptionMiddleware handles (everything but
        # Exception itself, which ServerErrorMiddleware answers after the other middleware).
        handler = _handler_for(request.app.exception_handlers, error)
        if handler is None:
            raise
        response = await handler(request, error)
    await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Any], error: Exception) -> Any:
    for kind in type(error).__mro__:
        if kind is Exception:
            return None
        if kind in handlers:
            return handlers[kind]
    return None
