"""The REST front end's HTTP limits below the ASGI app: uvicorn's protocol classes, guarded.

uvicorn leaves a request's headers unbounded in time (``timeout_keep_alive`` runs only between
requests) and, with httptools, in size; and a response its client does not read waits in the
app's ``send`` for ever, holding the connection and the response's bytes. Two flags bound the
headers, ``--rest_api_max_header_bytes`` (431) and ``--rest_api_header_timeout_in_ms`` (408, from
the connection or a keep-alive request's first byte); a write timeout (60 s, no flag) closes a
connection, without an answer, whose client has taken none of a response's unsent bytes for that
long, as nginx's ``send_timeout``. With httptools they are the gateway's guard
(:mod:`fdl.http_guard`), its body timeout left to :mod:`serving.protocol.rest.body` and its
connection cap off; with h11 the size is h11's own limit and the timers :class:`_GuardedH11`'s.
Each refusal answers TF Serving's JSON error form, logs and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fdl.http_guard import MALFORMED, GuardedHttpToolsProtocol, HttpLimits, close_response

http_log = logging.getLogger("serving.rest.http")
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_MS = 10_000
DEFAULT_WRITE_TIMEOUT_MS = 60_000
# h11's refusals of a request's Host headers (h11/_events.py), in fdl.http_guard.host_problem's
# words.
_H11_HOST_PROBLEMS = {
    "Found multiple Host: headers": "the request has more than one Host header (RFC 9112 §3.2)",
    "Missing mandatory Host: header": "the HTTP/1.1 request has no Host header (RFC 9112 §3.2)",
}
# h11's own header limit (its DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, kept in a private module).
DEFAULT_MAX_INCOMPLETE_EVENT_SIZE = 16 * 1024


class _TfsErrors:
    """TF Serving's JSON error form (``{"error": "…"}``) for a closed connection, by reason."""

    messages: ClassVar[dict[str, str]] = {}

    def error_json(self, status: int, reason: str, message: str) -> bytes:
        text = self.messages.get(reason) or message[:1].upper() + message[1:]
        if reason == "malformed_request" and message != MALFORMED:
            text = f"Malformed HTTP request: {message}"  # which rule (fdl.http_guard.host_problem)
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
    """The gateway's guard, its write timeout counted from the client's last progress rather
    than until the buffer drains: a predict answer can be hundreds of MB, and one read slowly
    must not be cut in the middle."""

    log = http_log
    _unsent = 0  # the transport's buffer when the write timer was armed

    def _watch_writes(self) -> None:
        if self._write_timer is None:
            self._unsent = self.transport.get_write_buffer_size()
        super()._watch_writes()

    def _write_stalled(self) -> None:
        if self.transport.get_write_buffer_size() < self._unsent:
            self._write_timer = None
            self._watch_writes()  # the client took some: it gets another write_timeout_s
            return
        super()._write_stalled()


class _GuardedH11(_TfsErrors, H11Protocol):
    """uvicorn's h11 protocol with a timeout for a request's headers (``header_timeout_s``,
    from the connection or a keep-alive request's first byte), JSON answers (431 past h11's
    ``max_header_bytes``, 400) for what h11 cannot parse, and a write timeout
    (``write_timeout_s``) for responses the client does not read."""

    header_timeout_s = 0.0
    write_timeout_s = 0.0
    max_header_bytes = DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
    _timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _unsent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._writes_moved()
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

    def pause_writing(self) -> None:
        # The transport's buffer is over its high-water mark: the client is not reading.
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        self._writes_moved()
        super().resume_writing()

    def _watch_writes(self) -> None:
        if self._write_timer is None and self.write_timeout_s > 0:
            self._unsent = self.transport.get_write_buffer_size()
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_stalled)

    def _writes_moved(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self.transport.get_write_buffer_size() < self._unsent:
            self._watch_writes()  # the client took some: it gets another write_timeout_s
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        http_log.warning(
            "closing connection from %s: its responses stayed unread for %.0f s",
            client,
            self.write_timeout_s,
        )
        # The app's pending send returns as for any disconnect. h11 parses no pipelined
        # request while one is answered, so the current cycle is the only one.
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        # abort, not close: close would wait for the buffer to drain, which it never does.
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:  # h11's only 431 case
            message = f"the request line and headers exceed {self.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", message)
        else:
            # Called while uvicorn handles h11's RemoteProtocolError: it says which rule broke.
            problem = _H11_HOST_PROBLEMS.get(str(sys.exception()), MALFORMED)
            self._refuse(400, "malformed_request", problem)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        http_log.warning("closing connection from %s: %s (%d)", client, message, status)
        self.transport.write(close_response(status, self.error_json(status, reason, message)))
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_writes()  # a client that never reads would keep it closing forever


def protocol(
    cors: bool, max_header_bytes: int, header_timeout_ms: int, write_timeout_ms: int
) -> tuple[type[Any], int | None]:
    """The uvicorn protocol class and h11's header limit (None: h11's own).

    httptools (C) answered 1.25-1.65x the calls/s of h11 (pure Python) at concurrency 16, but
    writes header names in lower case. Names are case-insensitive; with CORS support on, h11
    sends them as TF Serving writes them (Access-Control-Allow-Origin).
    """
    header_timeout_s = max(0, header_timeout_ms) / 1000
    write_timeout_s = max(0, write_timeout_ms) / 1000
    if cors:
        h11_limit = max_header_bytes if max_header_bytes > 0 else None
        size = h11_limit or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        attributes = {
            "header_timeout_s": header_timeout_s,
            "write_timeout_s": write_timeout_s,
            "max_header_bytes": size,
            "messages": _messages(size, header_timeout_ms),
        }
        return type("RestH11Protocol", (_GuardedH11,), attributes), h11_limit
    # The body's time is body.py's (its 408 names --rest_api_body_timeout_in_ms); the
    # connection cap has no flag.
    limits = HttpLimits(max(0, max_header_bytes), header_timeout_s, 0, write_timeout_s, 0)
    attributes = {"limits": limits, "messages": _messages(max_header_bytes, header_timeout_ms)}
    return type("RestHttpToolsProtocol", (_GuardedHttpTools,), attributes), None
