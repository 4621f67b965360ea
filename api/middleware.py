"""ASGI middleware: request ids, the body-size limit and budget, access logs and request metrics,
and the JSON 503 of a request the shutdown cancels (api/shutdown.py).

Pure ASGI (no BaseHTTPMiddleware), so bodies stream through and are never buffered here. The
checks of the Host and Content-Length headers, and the errors it answers itself, are in
:mod:`api.middleware_checks`; the access log line and request metrics in :mod:`api.access_log`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access_log import record
from api.budget import Budget, Reservation
from api.deps import sane_request_id
from api.errors import ApiError
from api.http_guard import CUT_STATUS
from api.logs import request_id_var
from api.middleware_checks import (
    BodyTooLarge,
    declared_length,
    host_name,
    host_not_allowed,
    send_error,
)
from api.shutdown import Running, shutting_down

# The status recorded (metrics, access log) for a request whose client went away before its body
# was in: nginx's "client closed request". Nobody receives it.
CLIENT_CLOSED = 499
# A body's budget share grows in steps of this many bytes as it arrives (never past its length).
BUDGET_STEP = 1024 * 1024
# A route's own body limit, lower than the gateway's, set in the scope before the route reads its
# body (api/admin_route.py); the body is counted against it from then on.
ROUTE_BODY_LIMIT = "fdl.route_max_body_bytes"
# Added to every answer (api/errors.py to the 500s, sent outside): browsers must not guess another
# type than the one sent; an answer to a request with a key (either header), and any job route's,
# must not be stored by a browser's or a shared cache.
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
_OURS = frozenset({NOSNIFF[0]})  # a route's own value gives way to ours: one header, not two
_OURS_NO_STORE = frozenset({NOSNIFF[0], NO_STORE[0]})
JOBS_PATH = "/v1/jobs"
# Answered whatever the Host header (FDL_ALLOWED_HOSTS): the kubelet's probes name the pod's
# address, and these tell a page that rebinds its name to the gateway nothing.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# The request headers the middleware reads.
_REQUEST_ID, _LENGTH, _HOST, _KEY, _CHUNKED = range(5)
_WATCHED = {
    b"x-request-id": _REQUEST_ID,
    b"content-length": _LENGTH,
    b"host": _HOST,
    b"authorization": _KEY,
    b"x-api-key": _KEY,
    b"transfer-encoding": _CHUNKED,
}


def _cut_status(scope: Scope) -> int:
    """What a request whose body never fully arrived is recorded as: what the gateway answered
    when it closed the connection itself (api/http_guard.py: 408 body timeout, 400 framing),
    else CLIENT_CLOSED."""
    return int(scope.get(CUT_STATUS, CLIENT_CLOSED))


@dataclass
class _Exchange:
    """What one request's answer has been so far, as far as the middleware knows."""

    start: float
    status: int = 500
    started: bool = False  # the response has begun
    refused: bool = False  # the middleware itself answered (413, 503) while the body streamed
    cut: int | None = None  # the body never arrived: CLIENT_CLOSED, or 408 (the body timeout)


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_budget: Budget | None = None,
        body_free_bytes: int = 0,
        allowed_hosts: frozenset[bytes] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_budget = body_budget
        self.body_free_bytes = body_free_bytes
        self.allowed_hosts = allowed_hosts  # FDL_ALLOWED_HOSTS' names; None: any Host
        self.running = Running()  # the requests' tasks, for the shutdown (api/shutdown.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = self.running.lifespan(receive)
            await self.app(scope, receive, send)
            return
        raw_id: bytes | None = None
        host: bytes | None = None
        length = b""
        chunked = keyed = False
        watched = _WATCHED.get
        # Lower-case names (ASGI); the last one wins. One Host at most: fdl/http_guard.py refuses
        # a request with more (RFC 9112 §3.2) before it gets here.
        for key, value in scope["headers"]:
            which = watched(key)  # one dict lookup per header, not a chain of comparisons
            if which is None:
                continue
            if which == _REQUEST_ID:
                raw_id = value
            elif which == _LENGTH:
                length = value
            elif which == _HOST:
                host = value
            elif which == _KEY:
                keyed = True
            else:
                chunked = True
        request_id = sane_request_id(raw_id.decode("latin-1") if raw_id is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        exchange = _Exchange(time.perf_counter())
        if keyed or scope["path"].startswith(JOBS_PATH):
            ours = _OURS_NO_STORE
            added = [(b"x-request-id", request_id.encode()), NOSNIFF, NO_STORE]
        else:
            ours = _OURS
            added = [(b"x-request-id", request_id.encode()), NOSNIFF]

        async def send_with_id(message: Message) -> None:
            if exchange.refused:
                return  # the 413 or 503 went out while the body streamed; the app's is moot
            if message["type"] == "http.response.start":
                exchange.started = True
                exchange.status = message["status"]
                headers = message.get("headers") or []
                for name, _value in headers:
                    if name in ours:  # rare (the UI's files, event streams): rebuilt then only
                        headers = [h for h in headers if h[0] not in ours]
                        break
                message["headers"] = [*headers, *added]
            await send(message)

        reservation: Reservation | None = None
        task = asyncio.current_task()
        if task is not None:
            self.running.tasks.add(task)
        try:
            if (
                self.allowed_hosts is not None
                and (host is None or host_name(host) not in self.allowed_hosts)
                and scope["path"] not in PROBE_PATHS
            ):
                # DNS rebinding: a page whose name now resolves to this gateway's address. No
                # Host at all (HTTP/1.0 only: fdl/http_guard.py refuses HTTP/1.1 without one)
                # names no listed host either, as Starlette's TrustedHostMiddleware decides.
                await send_error(send_with_id, host_not_allowed(host))
                return
            size = declared_length(length, self.max_body_bytes)
            if size is not None and size > self.max_body_bytes:
                # Refused before a byte of the body is read.
                await send_error(send_with_id, BodyTooLarge(self.max_body_bytes))
                return
            # A body is held while it is parsed: large ones share a budget across the process,
            # taken as their bytes arrive (an idle connection holds none of it).
            if self.body_budget is not None and (chunked or (size or 0) > self.body_free_bytes):
                reservation = Reservation(self.body_budget)
            limited = self._limited(scope, receive, send_with_id, exchange, size, reservation)
            await self.app(scope, limited, send_with_id)
        except ClientDisconnect:
            # The client left mid-body (or the gateway cut it): nobody to answer.
            if exchange.cut is None:
                exchange.cut = _cut_status(scope)
        except ApiError:
            if not exchange.refused:
                raise
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the shutdown's grace runs out
            # (api/shutdown.py). Unanswered: a JSON 503 rather than uvicorn's text/plain 500, once
            # the cancellation has run through the route (a promotion has undone its change).
            # Answered in part: uvicorn closes the connection.
            if exchange.refused:
                return
            if exchange.started:
                raise
            await send_error(send_with_id, shutting_down())
        finally:
            if reservation is not None:
                await reservation.release()
            elapsed = time.perf_counter() - exchange.start
            status = exchange.status if exchange.cut is None else exchange.cut
            record(scope, status, elapsed)
            request_id_var.reset(token)
            if task is not None:
                self.running.tasks.discard(task)

    def _limited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        size: int | None,
        reservation: Reservation | None,
    ) -> Receive:
        """Counts the body as it streams (chunked bodies declare no length), grows its budget
        share past the free bytes, and notes a client that leaves before the body is in.

        Past the limit (or when the budget cannot grow in time) the 413 (503) is sent from here,
        at once: whoever reads the body (a route, or FastAPI's own body parsing, which turns any
        read error into a 400) only sees the error. A route's lower limit (ROUTE_BODY_LIMIT in
        the scope) counts from the first read after it was set: a larger Content-Length is
        refused before anything is read.
        """
        received = 0
        complete = False
        most = size if size is not None else self.max_body_bytes  # larger ones refused already

        async def refuse(error: ApiError) -> None:
            if not exchange.refused:
                await send_error(send, error)
                exchange.refused = True
            try:
                raise error
            finally:
                # This frame is in the error's traceback: holding the error too made a cycle that
                # kept the frames below, and the body they read, until a full collection.
                del error

        async def limited_receive() -> Message:
            nonlocal received, complete
            limit = self.max_body_bytes
            route_limit = scope.get(ROUTE_BODY_LIMIT)
            if route_limit is not None and route_limit < limit:
                limit = route_limit
                if size is not None and size > limit:
                    await refuse(BodyTooLarge(limit))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    await refuse(BodyTooLarge(limit))
                if reservation is not None and received > self.body_free_bytes:
                    steps = -(-received // BUDGET_STEP)
                    try:
                        await reservation.grow_to(min(steps * BUDGET_STEP, max(most, received)))
                    except ApiError as error:
                        await refuse(error)
            elif (
                message["type"] == "http.disconnect"
                and not (complete or exchange.started)
                and exchange.cut is None
            ):
                exchange.cut = _cut_status(scope)
            return message

        return limited_receive
