"""Reading a REST request body within a size limit, a deadline and a server-wide budget
(fdl-model-server only).

TF Serving reads any body whole, however large and however slowly it arrives. Here a body over
``--rest_api_max_body_bytes`` is refused with 413 (from its ``Content-Length``, a chunked body
once it passes the limit); one that has not arrived within ``--rest_api_body_timeout_in_ms`` of
the request's headers with 408; and one that does not fit in what is left of
``--rest_api_max_body_bytes_in_flight``, the bytes of bodies all requests hold at once, with 503
and ``Retry-After`` (413 if it is larger than all of it). Each answers TF Serving's JSON error
form (``{"error": "…"}``) and closes the connection.

A refused body is read and dropped, without being kept, before the answer: closed while the
client still sends, a connection is reset by the kernel, and most clients (``requests``,
``aiohttp``, ``http.client``) then report the reset and never the answer. At most
``BodyLimits.drain_bytes`` in all are read, within the body's deadline; a body that declares
more, and one whose client sent ``Expect: 100-continue`` and is still waiting to be invited, is
answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from starlette.types import Receive, Scope

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_MS = 60_000
DEFAULT_MAX_BODY_BYTES_IN_FLIGHT = 1024 * 1024 * 1024
# A refused body is read and dropped up to this many times the limit, and at least
# DRAIN_MIN_BYTES, so that a client of a small limit still gets its answer.
DRAIN_FACTOR = 4
DRAIN_MIN_BYTES = 64 * 1024 * 1024
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class BodyLimits:
    """``max_bytes``: the largest body read (0 or less: any); ``timeout_s``: how long the whole
    body may take to arrive (None: forever); ``max_bytes_in_flight``: the bytes of bodies all
    requests hold at once (0 or less: any)."""

    max_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout_s: float | None = DEFAULT_BODY_TIMEOUT_MS / 1000
    max_bytes_in_flight: int = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT

    @property
    def drain_bytes(self) -> int:
        """How much of a refused body is read and dropped, at most, before the answer."""
        return max(DRAIN_FACTOR * self.max_bytes, DRAIN_MIN_BYTES)


class BodyRefused(Exception):
    """A body not read: the HTTP status and the message of the JSON error answered, and the
    seconds of ``Retry-After`` (None: no such header)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


class BodyBudget:
    """The bytes of bodies that requests hold at once, server-wide (``capacity``; 0 or less:
    any). It is used on the event loop's thread only, so it takes no lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def lease(self) -> BodyLease:
        return BodyLease(self)


class BodyLease:
    """The part of the budget one request holds, until :meth:`release` (once its answer is
    built, before it is written: the body is no longer needed)."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> bool:
        """Hold ``size`` more bytes, if the budget has them."""
        budget = self.budget
        if budget.capacity > 0 and budget.held + size > budget.capacity:
            return False
        budget.held += size
        self.size += size
        return True

    def release(self) -> None:
        self.budget.held -= self.size
        self.size = 0


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length``, None for a chunked body (``Transfer-Encoding`` overrides the
    length, RFC 9112 6.3, and h11 frames such a body by its chunks)."""
    if _header(scope, b"transfer-encoding") is not None:
        return None
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:  # the HTTP parser refuses these before the app sees them
        return None


def _too_large(limit: int, length: int | None) -> BodyRefused:
    size = f" of {length} bytes" if length is not None else ""
    return BodyRefused(
        413,
        f"Request body{size} is larger than the {limit} bytes this server accepts "
        "(--rest_api_max_body_bytes)",
    )


def _no_room(budget: BodyBudget, length: int | None, received: int) -> BodyRefused:
    """413 for a body larger than the whole budget, else 503 until others are answered."""
    flag = "--rest_api_max_body_bytes_in_flight"
    if max(length or 0, received) > budget.capacity:
        size = f" of {length} bytes" if length is not None else ""
        return BodyRefused(
            413,
            f"Request body{size} is larger than the {budget.capacity} bytes of request bodies "
            f"this server holds at once ({flag})",
        )
    return BodyRefused(
        503,
        f"The server holds {budget.capacity} bytes of request bodies at once ({flag}) and has "
        "no room for this one now; retry later",
        RETRY_AFTER_S,
    )


class _Reader:
    """The body's messages, counting the bytes received."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.received = 0
        self.more = True

    async def next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        self.more = bool(message.get("more_body", False))
        return chunk


async def read_body(
    scope: Scope, receive: Receive, limits: BodyLimits, lease: BodyLease
) -> bytearray:
    """The whole body of an HTTP request, its bytes held in ``lease``: a declared length is
    held before the body is read (and read into one buffer of that size), a chunked body as it
    arrives.

    Raises:
        BodyRefused: 413 over ``limits.max_bytes`` or larger than the whole budget, 503 when
            what is left of the budget cannot hold it, 408 past ``limits.timeout_s``.
        ClientGone: the client disconnected first.
    """
    reader = _Reader(receive)
    length = _declared_length(scope)
    loop = asyncio.get_running_loop()
    deadline = None if limits.timeout_s is None else loop.time() + limits.timeout_s
    try:
        if length is not None:
            if 0 < limits.max_bytes < length:
                raise _too_large(limits.max_bytes, length)
            if not lease.grow(length):
                raise _no_room(lease.budget, length, 0)
        try:
            async with asyncio.timeout_at(deadline):
                if length is not None:
                    return await _read_declared(reader, length)
                return await _read_chunked(reader, limits, lease)
        except TimeoutError:
            timeout_ms = round((limits.timeout_s or 0) * 1000)
            raise BodyRefused(
                408,
                f"Request body did not arrive within {timeout_ms} ms "
                "(--rest_api_body_timeout_in_ms)",
            ) from None
    except BodyRefused as refused:
        expect = (_header(scope, b"expect") or b"").lower()
        waiting = reader.received == 0 and expect == b"100-continue"
        if refused.status != 408 and not waiting and (length or 0) <= limits.drain_bytes:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while reader.more and reader.received <= limits.drain_bytes:
                        await reader.next()  # dropped
        raise


async def _read_declared(reader: _Reader, length: int) -> bytearray:
    """A body of a declared length, into one buffer (chunks and their join would take twice
    the body's size at the end)."""
    body = bytearray(length)
    view = memoryview(body)
    while reader.more:
        start = reader.received
        chunk = await reader.next()
        if reader.received > length:  # the HTTP parser frames by the length; never seen
            raise BodyRefused(400, f"Request body is longer than its Content-Length {length}")
        view[start : reader.received] = chunk
    view.release()
    del body[reader.received :]  # shorter only if the parser ended it early; never seen
    return body


async def _read_chunked(reader: _Reader, limits: BodyLimits, lease: BodyLease) -> bytearray:
    """A body of no declared length, held in the budget chunk by chunk."""
    body = bytearray()  # grown in place: no chunks to join at the end
    while reader.more:
        chunk = await reader.next()
        if 0 < limits.max_bytes < reader.received:
            raise _too_large(limits.max_bytes, None)
        if not lease.grow(len(chunk)):
            raise _no_room(lease.budget, None, reader.received)
        body += chunk
    return body
