"""The REST front end: the ASGI app of :mod:`serving.protocol.rest.app`, on uvicorn on the loop.

uvicorn runs on the same event loop as the gRPC front end and the batch queues,
so a REST request costs no thread hand-off of its own and joins a batch directly. asyncio's
transports set TCP_NODELAY, so a keep-alive client never waits for its delayed ACK (the 40 ms
stall of the ``http.server`` front end this replaces).

The flags keep their meaning: ``--rest_api_port`` is the port (bound here first, so a port in
use fails the start with exit status 1), ``--rest_api_num_threads`` the threads that run the
calls handed off the loop (0: 4 x CPUs, TF Serving's default), ``--rest_api_timeout_in_ms`` the
deadline of one call and how long an idle keep-alive connection stays open. Three flags of ours
bound request bodies: ``--rest_api_max_body_bytes`` and ``--rest_api_body_timeout_in_ms`` each
one, ``--rest_api_max_body_bytes_in_flight`` all of them at once
(:mod:`serving.protocol.rest.body`). Two more bound headers, which uvicorn leaves unbounded in
time (``timeout_keep_alive`` runs only between requests) and, with httptools, in size:
``--rest_api_max_header_bytes`` (431) and ``--rest_api_header_timeout_in_ms`` (408, from the
connection or a keep-alive request's first byte). With httptools they are the gateway's guard
(:mod:`fdl.http_guard`), its body timeout left to :mod:`serving.protocol.rest.body` and its
write timeout and connection cap off; with h11 the size is h11's own limit and the timeout
:class:`_GuardedH11`. Each answers TF Serving's JSON error form, logs and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fdl.http_guard import GuardedHttpToolsProtocol, HttpLimits, close_response
from serving.dataplane import DataPlane
from serving.event_loop import LoopThread
from serving.protocol.rest.app import RestApi
from serving.protocol.rest.body import (
    DEFAULT_BODY_TIMEOUT_MS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
    BodyLimits,
)
from serving.protocol.rest.predict import RestPredictor

log = logging.getLogger("serving.server")
http_log = logging.getLogger("serving.rest.http")
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_MS = 10_000
# h11's own header limit (its DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, kept in a private module).
DEFAULT_MAX_INCOMPLETE_EVENT_SIZE = 16 * 1024


class _TfsErrors:
    """TF Serving's JSON error form (``{"error": "…"}``) for a closed connection, by reason."""

    messages: ClassVar[dict[str, str]] = {}

    def error_json(self, status: int, reason: str, message: str) -> bytes:
        text = self.messages.get(reason) or message[:1].upper() + message[1:]
        return json.dumps({"error": text}).encode()


def _messages(max_header_bytes: int, header_timeout_ms: int) -> dict[str, str]:
    return {
        "headers_too_large": f"Request line and headers are larger than the {max_header_bytes} "
        "bytes this server accepts (--rest_api_max_header_bytes)",
        "header_timeout": f"Request headers did not arrive within {header_timeout_ms} ms "
        "(--rest_api_header_timeout_in_ms)",
        "malformed_request": "Malformed HTTP request: the request line, a header or the "
        "chunked framing is not valid HTTP/1.1",
    }


class _GuardedHttpTools(_TfsErrors, GuardedHttpToolsProtocol):
    log = http_log


class _GuardedH11(_TfsErrors, H11Protocol):
    """uvicorn's h11 protocol with a timeout for a request's headers (``header_timeout_s``,
    from the connection or a keep-alive request's first byte) and JSON answers (431 past h11's
    ``max_header_bytes``, 400) for what h11 cannot parse."""

    header_timeout_s = 0.0
    max_header_bytes = DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # a request starts: its headers get header_timeout_s
        super().data_received(data)
        if self._timer is not None and self.conn.their_state is not h11.IDLE:
            self._disarm()  # its headers are in (or the connection failed)

    def _arm(self) -> None:
        if self.header_timeout_s > 0:
            self._timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        idle = self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE
        if idle and not self.transport.is_closing():
            self._refuse(408, "header_timeout", "headers did not arrive in time")

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:  # h11's only 431 case
            message = f"the request line and headers exceed {self.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", message)
        else:
            self._refuse(400, "malformed_request", "the request is not valid HTTP/1.1")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        http_log.warning("closing connection from %s: %s (%d)", client, message, status)
        self.transport.write(close_response(status, self.error_json(status, reason, message)))
        self.transport.close()


def _protocol(
    cors: bool, max_header_bytes: int, header_timeout_ms: int
) -> tuple[type[Any], int | None]:
    """The uvicorn protocol class and h11's header limit (None: h11's own).

    httptools (C) answered 1.25-1.65x the calls/s of h11 (pure Python) at concurrency 16, but
    writes header names in lower case. Names are case-insensitive; with CORS support on, h11
    sends them as TF Serving writes them (Access-Control-Allow-Origin).
    """
    header_timeout_s = max(0, header_timeout_ms) / 1000
    if cors:
        h11_limit = max_header_bytes if max_header_bytes > 0 else None
        size = h11_limit or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        attributes = {
            "header_timeout_s": header_timeout_s,
            "max_header_bytes": size,
            "messages": _messages(size, header_timeout_ms),
        }
        return type("RestH11Protocol", (_GuardedH11,), attributes), h11_limit
    # The body's time is body.py's (its 408 names --rest_api_body_timeout_in_ms); the write
    # timeout and the connection cap have no flag.
    limits = HttpLimits(max(0, max_header_bytes), header_timeout_s, 0, 0, 0)
    attributes = {"limits": limits, "messages": _messages(max_header_bytes, header_timeout_ms)}
    return type("RestHttpToolsProtocol", (_GuardedHttpTools,), attributes), None


def _listen(host: str, port: int) -> socket.socket:
    # The protocol must be named: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # is IPPROTO_TCP, and a socket made with proto 0 passes 0 on to every connection it accepts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen for HTTP/REST on port {port}: {error}") from error
    sock.setblocking(False)
    return sock


class RestFrontEnd:
    """The HTTP/REST server of one model server process.

    Args:
        data_plane: the model operations the routes translate to.
        loop: the event loop thread uvicorn runs on.
        bind_address: the host the port listens on.
        num_threads: ``--rest_api_num_threads`` (0: 4 x CPUs).
        timeout_ms: ``--rest_api_timeout_in_ms`` (0 or less: none).
        cors: ``--rest_api_enable_cors_support``.
        max_body_bytes: ``--rest_api_max_body_bytes`` (0 or less: no limit).
        body_timeout_ms: ``--rest_api_body_timeout_in_ms`` (0 or less: none).
        max_body_bytes_in_flight: ``--rest_api_max_body_bytes_in_flight`` (0 or less: none).
        max_header_bytes: ``--rest_api_max_header_bytes`` (0 or less: none; h11's 16 KiB).
        header_timeout_ms: ``--rest_api_header_timeout_in_ms`` (0 or less: none).
    """

    def __init__(
        self,
        data_plane: DataPlane,
        loop: LoopThread,
        *,
        bind_address: str,
        num_threads: int = 0,
        timeout_ms: int = 0,
        cors: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_ms: int = DEFAULT_BODY_TIMEOUT_MS,
        max_body_bytes_in_flight: int = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        header_timeout_ms: int = DEFAULT_HEADER_TIMEOUT_MS,
    ) -> None:
        self.loop = loop
        self.bind_address = bind_address
        threads = num_threads or 4 * (os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rest-work")
        timeout_s = timeout_ms / 1000
        timeout = timeout_s if timeout_s > 0 else None
        predictor = RestPredictor(data_plane, self.executor, timeout)
        body_timeout = body_timeout_ms / 1000 if body_timeout_ms > 0 else None
        limits = BodyLimits(max_body_bytes, body_timeout, max_body_bytes_in_flight)
        self.app = RestApi(data_plane, predictor, cors, limits)
        protocol, h11_limit = _protocol(self.app.cors, max_header_bytes, header_timeout_ms)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http=protocol,
            h11_max_incomplete_event_size=h11_limit,
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, round(timeout_s)) if timeout else 3600,
            timeout_graceful_shutdown=2,
        )
        self._uvicorn = uvicorn.Server(config)
        self._serving: asyncio.Future | None = None

    def start(self, port: int) -> None:
        sock = _listen(self.bind_address, port)
        self._serving = asyncio.run_coroutine_threadsafe(
            self._uvicorn.serve(sockets=[sock]), self.loop.loop
        )
        self.loop.run(self._started(), timeout=30)

    async def _started(self) -> None:
        while not self._uvicorn.started:
            if self._serving is not None and self._serving.done():
                self._serving.result()  # its error, if it failed to start
                raise OSError("the HTTP/REST server stopped while starting")
            await asyncio.sleep(0.005)  # uvicorn sets the flag; it has no event to wait on

    def stop(self, grace: float = 2.0) -> None:
        self._uvicorn.should_exit = True
        if self._serving is not None:
            try:
                self._serving.result(timeout=grace + 1)
            except Exception as error:  # a stuck request must not keep the process alive
                log.warning("HTTP/REST server did not stop cleanly: %s", error)
        self.executor.shutdown(wait=False, cancel_futures=True)
