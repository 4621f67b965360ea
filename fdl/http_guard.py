"""HTTP limits below an ASGI app: header size, header and body read timeouts, a write-stall
timeout, a connection cap; one Host header per request (none only in HTTP/1.0). Shared by the
gateway (api/http_guard.py) and the model server's REST front end (serving/protocol/rest/server.py).

uvicorn's httptools protocol (the fast one) has no header-size limit, no read timeouts and no
write timeout (a client that stops reading its responses holds its connection, and the app's
``send``, forever), and its ``limit_concurrency`` only answers 503 once headers have arrived, so
idle connections still hold file descriptors. This subclass adds them; everything else is
uvicorn's. A limit of 0 or less is off. Each service subclasses it to say how an error body reads
(:meth:`GuardedHttpToolsProtocol.error_json`), how a triggered limit is counted
(:meth:`GuardedHttpToolsProtocol.count`) and which logger tells it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# The scope key under which a request whose connection this module closed carries the status it
# answered (408 body timeout, 400 malformed chunked framing), for a middleware to record.
CUT_STATUS = "fdl.cut_status"


@dataclass(frozen=True)
class HttpLimits:
    """Each limit is off at 0 or less."""

    max_header_bytes: int = 32 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    write_timeout_s: float = 60.0
    max_connections: int = 512


PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


MALFORMED = "the request is not valid HTTP/1.1 (request line, a header or chunked framing)"


def host_problem(headers: list[tuple[bytes, bytes]], http_version: str) -> str | None:
    """What is wrong with a request's Host headers (RFC 9112 §3.2), or None: more than one (a
    proxy reading the first and a check reading the last would disagree on the name), or none in
    HTTP/1.1 (HTTP/1.0 needs none). ``headers``: the parsed ones, names in lower case."""
    count = 0
    for name, _ in headers:  # a pass over ~10 tuples: ~0.45 µs a request
        if name == b"host":
            count += 1
    if count == 1:
        return None
    if count:
        return f"the request has more than one Host header ({count}; RFC 9112 §3.2)"
    if http_version == "1.0":
        return None
    return f"the HTTP/{http_version} request has no Host header (RFC 9112 §3.2)"


class _BadHost(httptools.HttpParserError):
    """Raised from the parser's callback: it stops parsing (no body, no app) and uvicorn answers
    it as any parse error, with :meth:`GuardedHttpToolsProtocol.send_400_response`."""


def close_response(status: int, body: bytes) -> bytes:
    """A whole HTTP/1.1 response with a JSON body, after which the connection closes; with
    nosniff, as every answer of the apps above (a browser must not take it for another type)."""
    return (
        f"HTTP/1.1 {status} {PHRASES[status]}\r\ncontent-type: application/json\r\n"
        "x-content-type-options: nosniff\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = HttpLimits()
    log = logging.getLogger("fdl.http")
    # Who refuses a connection past the cap, in its message.
    server_name = "the server"
    # Which listener closed a connection, in its warnings (" on the probe port"), where a
    # server has more than one.
    where = ""

    def error_json(self, status: int, reason: str, message: str) -> bytes:
        """The JSON body answered with ``status`` when the limit ``reason`` closes a connection;
        ``message`` says what happened."""
        return json.dumps({"error": {"code": reason, "message": message}}).encode()

    def count(self, reason: str) -> None:
        """Called once each time the limit ``reason`` triggers (a metric, where there is one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._in_headers = True  # waiting for (the rest of) a request's headers
        self._requests_ended = 0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._running: RequestResponseCycle | None = None  # the request being answered
        self._problem: str | None = None  # why the parse failed, where httptools cannot say

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if 0 < self.limits.max_connections < len(self.connections):
            message = f"{self.server_name} has too many connections"
            self._refuse(503, "too_many_connections", message)
            return
        self._arm(self.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._writes_moved()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def pause_writing(self) -> None:
        # The transport's buffer is over its high-water mark: the client is not reading. It
        # gets the write timeout to take some of it, as nginx's send_timeout.
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        self._writes_moved()
        super().resume_writing()

    def _watch_writes(self) -> None:
        if self._write_timer is None and self.limits.write_timeout_s > 0:
            self._write_timer = self.loop.call_later(
                self.limits.write_timeout_s, self._write_stalled
            )

    def _writes_moved(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        self.count("write_timeout")
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        self.log.warning(
            "closing connection from %s%s: its responses stayed unread for %.0f s",
            client,
            self.where,
            self.limits.write_timeout_s,
            extra={"reason": "write_timeout", "client": client},
        )
        # The app's pending send must return as for any disconnect, and no pipelined request
        # start: uvloop's abort resumes writing before uvicorn learns the connection is gone,
        # and uvicorn marks only the last parsed request as disconnected, which with pipelined
        # requests is not the one running.
        for cycle in (self._running, self.cycle, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()  # an app waiting in receive() learns it at once
        self.pipeline.clear()
        # abort, not close: close would wait for the buffer to drain, which it never does.
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        # Pipelined requests may share one read: the parser is fed at most what the current
        # request's headers may still take, and again (with a fresh allowance) only when a
        # request ended within it. What follows a request's end inside one piece is not counted
        # against the next, so its headers may reach twice the limit: bounded all the same.
        limit = self.limits.max_header_bytes
        while data:
            if not self._in_headers:
                super().data_received(data)
                return
            if self._timer is None:  # the first byte of a keep-alive connection's next request
                self._arm(self.limits.header_timeout_s, "header_timeout")
            if limit <= 0:
                super().data_received(data)
                return
            room = limit - self._header_bytes
            if room <= 0:
                self._headers_too_large()
                return
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            ended = self._requests_ended
            super().data_received(piece)
            if self.transport.is_closing():
                return
            if data and self._in_headers and self._requests_ended == ended:
                self._headers_too_large()
                return

    def _headers_too_large(self) -> None:
        self._refuse(
            431,
            "headers_too_large",
            f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
        )

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._problem = host_problem(self.headers, self.parser.get_http_version())
        if self._problem is not None:
            raise _BadHost(self._problem)
        self._arm(self.limits.body_timeout_s, "body_timeout")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The body is in; the app's time to answer is its own (its deadlines, if any).
        self._disarm()
        self._in_headers = True
        self._header_bytes = 0
        self._requests_ended += 1
        super().on_message_complete()

    def timeout_keep_alive_handler(self) -> None:
        # Routine (every idle client ends this way), so counted, and logged at debug level only.
        if not self.transport.is_closing():
            self.count("keepalive_timeout")
            self.log.debug(
                "closing idle keep-alive connection", extra={"reason": "keepalive_timeout"}
            )
        super().timeout_keep_alive_handler()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        what = "headers" if reason == "header_timeout" else "the body"
        self._refuse(408, reason, f"{what} did not arrive in time")

    def send_400_response(self, msg: str) -> None:
        # What httptools cannot parse (a bad request line, header or chunk size, two lengths)
        # or host_problem refuses: uvicorn would answer text/plain; the services' errors are JSON.
        self._refuse(400, "malformed_request", self._problem or MALFORMED)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.count(reason)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        self.log.warning(
            "closing connection from %s%s: %s (%d)",
            client,
            self.where,
            message,
            status,
            extra={"reason": reason, "client": client, "status": status},
        )
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(close_response(status, self.error_json(status, reason, message)))
        if self.cycle is not None:
            # The app sees only a disconnect: this tells its metrics and access log what the
            # client was answered (the gateway's api/middleware.py reads it).
            self.cycle.scope[CUT_STATUS] = status  # type: ignore[literal-required]
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_writes()  # a client that never reads would keep it closing forever
