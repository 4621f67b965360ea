"""A job's event stream (the Redis stream :class:`fdl.jobs.JobStore` writes) as SSE messages.

Read with the asyncio Redis client, so a waiting subscriber holds no thread. Each XREAD blocks
for half the client's socket timeout (redis-py's default is 5 s): a block as long as the
timeout made the socket time out first, which ended every idle stream after ~5 s. An idle round
sends a keep-alive comment, so proxies and clients see the stream is alive.

A quiet stream holds a Redis connection for its blocking XREAD, so the streams read Redis
through a client of their own (``app.state.stream_redis``) whose pool has a connection for each
of the ``FDL_MAX_EVENT_STREAMS`` streams :class:`StreamSlots` lets open at once: streams never
meet "Too many connections", and never take the connections of ``/readyz`` and the rate limits
(``app.state.redis``). A stream beyond the cap gets 503 ``too_many_streams`` before anything is
sent (:class:`CappedEventSourceResponse`).

When the gateway's shutdown begins (SIGTERM or SIGINT: uvicorn sets ``should_exit``), every open
stream ends at once, not after FDL_SHUTDOWN_GRACE_S: sse-starlette watches uvicorn's exit flag
(its wrapper of ``Server.handle_exit``, which :class:`api.probe.GatewayServer` calls, and the
server found through the SIGTERM handler; polled every 0.5 s) and stops the stream between two
events. :class:`CappedEventSourceResponse` then sends a ``retry`` hint of RESUME_RETRY_MS and the
closing chunk, so the client reconnects at once with ``Last-Event-ID``, to another gateway, which
sends the next events from the Redis stream (:func:`job_events`): none is lost, and the gateway
exits within about a second when only streams are open.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from api.errors import STORE_RETRY_AFTER_S, ApiError
from fdl.job_records import EVENTS_KEY, JOB_KEY, TERMINAL, JobStatus, StreamReply
from fdl.json_finite import finite_dumps

log = logging.getLogger("fdl.gateway")
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
_MAX_ID_PART = 2**64 - 1  # each half of a Redis stream id is an unsigned 64-bit number


def valid_stream_id(text: str) -> bool:
    """A Redis stream id (``123-0``) that XREAD accepts: two parts, each within 64 bits."""
    if not _STREAM_ID.fullmatch(text):
        return False
    return all(int(part) <= _MAX_ID_PART for part in text.split("-"))


# The longest XREAD block; it is cut to half the client's socket timeout.
MAX_BLOCK_MS = 10_000
# redis-py's socket timeout (since 6.0) when the URL sets none; connection_kwargs omit it then.
REDIS_PY_SOCKET_TIMEOUT_S = 5.0
KEEP_ALIVE = {"comment": "keep-alive"}
# The reconnection delay a stream ended by the gateway's shutdown tells its client (ms): short,
# since another gateway serves the stream from where it stopped.
RESUME_RETRY_MS = 1000


# What a stream refused at the cap is told to wait before trying again.
TOO_MANY_STREAMS_RETRY_AFTER_S = 5


class StreamSlots:
    """The event streams open in this process, at most ``limit`` (FDL_MAX_EVENT_STREAMS).

    Taken and given back on the event loop only, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """One more stream, unless ``limit`` are open already."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def stream_redis(redis_url: str, max_streams: int) -> aioredis.Redis:
    """The streams' own client: a connection in its pool for each stream the cap lets open."""
    return aioredis.Redis.from_url(redis_url, decode_responses=True, max_connections=max_streams)


def too_many_streams(limit: int) -> ApiError:
    return ApiError(
        503,
        "too_many_streams",
        f"this gateway already serves {limit} job event streams (FDL_MAX_EVENT_STREAMS); "
        "retry shortly",
        headers={"Retry-After": str(TOO_MANY_STREAMS_RETRY_AFTER_S)},
    )


class CappedEventSourceResponse(EventSourceResponse):
    """An event stream that holds one of ``slots`` from its first byte to its end (the client
    gone, the job ended, the server stopping); with none free, 503 ``too_many_streams`` instead.

    The slot is taken when the response runs, not in the route, so no path between the two can
    keep it; the error raised here reaches the app's error handlers (nothing has been sent).

    A stream the gateway's shutdown ends gets a ``retry: RESUME_RETRY_MS`` event just before its
    closing chunk. sse-starlette sets ``stopping`` when it sees the shutdown, stops the stream
    while it waits for its next event, and sends the closing chunk only when the last event went
    out whole: the hint always follows a complete event."""

    def __init__(self, content: AsyncIterator[dict[str, Any]], slots: StreamSlots, **kwargs: Any):
        self.stopping = anyio.Event()
        super().__init__(content, shutdown_event=self.stopping, **kwargs)
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.slots.take():
            raise too_many_streams(self.slots.limit)
        try:
            await super().__call__(scope, receive, self._resumable(send))
        finally:
            self.slots.give_back()

    def _resumable(self, send: Send) -> Send:
        """``send``, with the retry hint put before the closing chunk of a stream the shutdown
        ended (one that ended with its job, or its client, gets none)."""
        hint = ServerSentEvent(retry=RESUME_RETRY_MS, sep=self.sep).encode()

        async def send_resumable(message: Message) -> None:
            closing = message["type"] == "http.response.body" and not message.get("more_body")
            if closing and self.stopping.is_set():
                await send({"type": "http.response.body", "body": hint, "more_body": True})
            await send(message)

        return send_resumable


def _is_end(kind: str, data: Any) -> bool:
    return kind == "status" and isinstance(data, dict) and data.get("status") in TERMINAL


def block_ms_for(client: aioredis.Redis) -> int:
    """Half the client's socket timeout (2.5 s by default), so a block never outlasts it."""
    timeout_s = client.connection_pool.connection_kwargs.get(
        "socket_timeout", REDIS_PY_SOCKET_TIMEOUT_S
    )
    if timeout_s is None:
        return MAX_BLOCK_MS
    return max(100, min(MAX_BLOCK_MS, int(float(timeout_s) * 500)))


async def job_status(client: aioredis.Redis, job_id: str) -> JobStatus | None:
    raw = await client.hget(JOB_KEY.format(job_id), "status")
    if raw is None:
        return None
    return JobStatus(json.loads(raw))


async def job_events(
    client: aioredis.Redis, job_id: str, after: str = "0-0", block_ms: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """SSE messages (id, event, data) after stream id ``after``; ends after the terminal status.

    A client that reconnects with ``Last-Event-ID`` past the end gets nothing and the stream
    closes at once. If Redis goes away mid-stream, the stream ends with an ``unavailable`` event
    and a ``retry`` hint; an EventSource reconnects with ``Last-Event-ID`` and loses nothing.
    """
    key = EVENTS_KEY.format(job_id)
    block = block_ms if block_ms is not None else block_ms_for(client)
    while True:
        try:
            reply = cast(StreamReply, await client.xread({key: after}, count=100, block=block))
            status = None if reply else await job_status(client, job_id)
        except RedisError as error:
            log.warning("job %s event stream: job store unavailable: %r", job_id, error)
            yield {
                "event": "unavailable",
                "data": json.dumps({"code": "job_store_unavailable", "message": str(error)}),
                "retry": STORE_RETRY_AFTER_S * 1000,
            }
            return
        entries = [entry for _stream, items in reply or [] for entry in items]
        if not entries:
            if status is None or status.terminal:
                return
            yield KEEP_ALIVE
            continue
        for entry_id, fields in entries:
            after = entry_id
            kind = fields.get("type", "message")
            try:
                data = json.loads(fields.get("data", "null"))
            except json.JSONDecodeError:
                data = fields.get("data")
            # A diverged run's NaN loss as null: the bare word NaN would make the event unreadable.
            yield {"id": entry_id, "event": kind, "data": finite_dumps(data)}
            if _is_end(kind, data):
                return
