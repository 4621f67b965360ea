"""ASGI middleware: request ids, the body-size limit, access logs and request metrics.

Pure ASGI (no BaseHTTPMiddleware), so bodies stream through and are never buffered here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.budget import Budget
from api.deps import sane_request_id
from api.errors import ApiError, error_body
from api.logs import request_id_var
from api.metrics import REQUEST_LATENCY, REQUESTS, child

log = logging.getLogger("fdl.gateway.access")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"the request body exceeds {limit:,} bytes")


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_budget: Budget | None = None,
        body_free_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_budget = body_budget
        self.body_free_bytes = body_free_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_id: bytes | None = None
        length = b""
        chunked = False
        for key, value in scope["headers"]:  # lower-case names (ASGI); the last one wins
            if key == b"x-request-id":
                raw_id = value
            elif key == b"content-length":
                length = value
            elif key == b"transfer-encoding":
                chunked = True
        request_id = sane_request_id(raw_id.decode("latin-1") if raw_id is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = {"code": 500}
        refused = {"sent": False}

        async def send_with_id(message: Message) -> None:
            if refused["sent"]:
                return  # the 413 went out while the body streamed; the app's answer is moot
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            if length.isdigit() and int(length) > self.max_body_bytes:
                # Refused before a byte of the body is read.
                await _send_error(send_with_id, BodyTooLarge(self.max_body_bytes))
                return
            # A body is held while it is parsed: large ones share a budget across the process.
            size = int(length) if length.isdigit() else self.max_body_bytes if chunked else 0
            limited = self._limited(receive, send_with_id, refused)
            if self.body_budget is None or size <= self.body_free_bytes:
                await self.app(scope, limited, send_with_id)
            else:
                try:
                    async with self.body_budget.share(size):
                        await self.app(scope, limited, send_with_id)
                except ApiError as error:
                    if error.status != 503 or error.code != "busy":
                        raise
                    await _send_error(send_with_id, error)
        except BodyTooLarge:
            if not refused["sent"]:
                raise
        finally:
            elapsed = time.perf_counter() - start
            self._record(scope, status["code"], elapsed)
            request_id_var.reset(token)

    def _limited(self, receive: Receive, send: Send, refused: dict[str, bool]) -> Receive:
        """Counts the body as it streams (chunked bodies declare no length).

        Past the limit the 413 is sent from here, at once: whoever reads the body (a route, or
        FastAPI's own body parsing, which turns any read error into a 400) only sees the error.
        """
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    error = BodyTooLarge(limit)
                    if not refused["sent"]:
                        await _send_error(send, error)
                        refused["sent"] = True
                    raise error
            return message

        return limited_receive

    @staticmethod
    def _record(scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        model = (scope.get("path_params") or {}).get("model", "")
        if status >= 400:
            # Only an answer proves the model is served: names from refused requests (unknown,
            # invalid, unauthenticated, rate-limited...) stay out of the labels, so nobody can
            # create unbounded series.
            model = ""
        method = scope.get("method", "")
        child(REQUESTS, template, method, model, str(status)).inc()
        child(REQUEST_LATENCY, template, method).observe(elapsed)
        if template in ("/metrics", "/healthz"):
            return  # scrapes and probes would drown the access log
        log.info(
            "%s %s %s %.1fms",
            method,
            scope.get("path", ""),
            status,
            elapsed * 1000,
            extra={
                "method": method,
                "path": scope.get("path", ""),
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": (scope.get("client") or ("", 0))[0],
            },
        )


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error_body(error.code, error.message)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
