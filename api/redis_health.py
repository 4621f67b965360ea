"""What ``/readyz`` says about Redis, and the gateway's check of Redis's eviction policy at start.

One probe, on a connection of its own opened for it (a Redis at its ``maxclients`` refuses new
connections while the pooled ones still answer: the job routes, which need new ones, then fail),
sends in one round trip ``PING``, a ``SET`` of a short-lived key (``PX``) and the reads of the
eviction policy (``CONFIG GET``, else ``INFO memory``: :mod:`fdl.redis_policy`). Its verdict:

- ``ok``: it answers and takes writes;
- ``refuses writes: <Redis's words>``: it answers but refuses the write, at its ``maxmemory``
  (``OOM``), as a replica (``READONLY``) or unable to persist (``MISCONF``, which refuses
  ``PING`` too). The gateway stays ready (``/readyz`` 200, ``"status": "degraded"``):
  classification needs no Redis writes, and the job routes that do answer 503 themselves;
- ``unreachable: <what>``: no connection, no answer within the budget, ``maxclients`` reached,
  a wrong password, Redis loading its data: ``/readyz`` 503.

Concurrent ``/readyz`` requests share one probe in flight (:func:`shared_probe`): a flood of them,
which anyone who reaches the port can send, opens one Redis connection at a time, not one each,
so it cannot fill Redis's ``maxclients``.

Socket errors are named by the error (``Connection refused``), never Redis's address, since
``/readyz`` answers anyone who reaches the gateway's port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import weakref
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    BusyLoadingError,
    MaxClientsReachedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from fdl.redis_policy import CONFIG_NAME, eviction_warning, policy_from
from fdl.store_retry import REFUSAL_CLASSES

# How long the probe waits for Redis, connecting included (a LAN round trip is well under a
# millisecond), so a hung Redis makes the gateway not ready in about a second.
READY_REDIS_TIMEOUT_S = 1.0
# The probe's write: a key of its own that expires by itself; every replica writes the same one.
PROBE_KEY = "fdl:readyz:probe"
PROBE_TTL_MS = 10_000
DETAIL_CHARS = 200
# Redis's codes of the refusals of a Redis that answers: those the stores wait out.
REFUSAL_CODES = tuple(REFUSAL_CLASSES)
# The codes that redis-py before 8 strips from these errors' words and keeps nowhere.
_CODES = {
    OutOfMemoryError: "OOM",
    ReadOnlyError: "READONLY",
    MaxClientsReachedError: "ERR",
    BusyLoadingError: "LOADING",
}
log = logging.getLogger("fdl.gateway")


@dataclass(frozen=True)
class RedisHealth:
    check: str  # "ok", "refuses writes: …" or "unreachable: …"
    warning: str | None = None  # an eviction policy's (fdl.redis_policy.eviction_warning)

    @property
    def reachable(self) -> bool:
        return not self.check.startswith("unreachable")


def _reply_code(error: RedisError) -> str | None:
    """The code of Redis's reply that ``error`` is; None for an error of the client's own."""
    return getattr(error, "status_code", None) or _CODES.get(type(error))


def _code(error: RedisError) -> str | None:
    code = _reply_code(error)
    if code is None and isinstance(error, ResponseError):
        first = str(error).split(" ", 1)[0]  # redis-py before 8 keeps an unknown code (MISCONF)
        code = first if first.isalpha() and first.isupper() else None
    return code


def redis_words(error: RedisError) -> str:
    """Redis's reply, its code first, cut to :data:`DETAIL_CHARS`."""
    words, code = str(error), _code(error)
    if code and not words.startswith(f"{code} "):
        words = f"{code} {words}"
    return words[:DETAIL_CHARS]


def _what(error: BaseException) -> str:
    """Why Redis could not be reached, without its address."""
    if isinstance(error, TimeoutError | RedisTimeoutError):
        return f"no answer within {READY_REDIS_TIMEOUT_S:g} s"
    if isinstance(error, RedisError) and _reply_code(error):
        return redis_words(error)  # Redis's reply: max clients, loading, a wrong password
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, socket.gaierror):
        return f"{type(error).__name__}: {cause.strerror}"
    if isinstance(cause, OSError) and cause.errno:
        return f"{type(error).__name__}: {os.strerror(cause.errno)}"
    return type(error).__name__


def _probe_client(redis: aioredis.Redis) -> aioredis.Redis:
    """A client of one new connection to the Redis of ``redis``, as it connects (password, TLS,
    database), bounded by the budget and tried once."""
    pool = redis.connection_pool
    kwargs: dict[str, Any] = {
        **pool.connection_kwargs,
        "socket_timeout": READY_REDIS_TIMEOUT_S,
        "socket_connect_timeout": READY_REDIS_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    return aioredis.Redis.from_pool(
        aioredis.ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs)
    )


async def probe_redis(redis: aioredis.Redis) -> RedisHealth:
    """The probe above; at most about :data:`READY_REDIS_TIMEOUT_S`."""
    client = _probe_client(redis)
    try:
        async with asyncio.timeout(READY_REDIS_TIMEOUT_S):
            pipe = client.pipeline(transaction=False)
            pipe.ping()
            pipe.set(PROBE_KEY, "1", px=PROBE_TTL_MS)
            pipe.config_get(CONFIG_NAME)
            pipe.info("memory")
            pong, wrote, config, info = await pipe.execute(raise_on_error=False)
    except Exception as error:  # any failure to get the replies means Redis is unreachable
        return RedisHealth(f"unreachable: {_what(error)}")
    finally:
        await client.aclose()
    warning = eviction_warning(policy_from(config, info))
    for reply in (pong, wrote):
        if isinstance(reply, RedisError) and _code(reply) in REFUSAL_CODES:
            return RedisHealth(f"refuses writes: {redis_words(reply)}", warning)
    if isinstance(pong, Exception):
        return RedisHealth(f"unreachable: {_what(pong)}", warning)
    if isinstance(wrote, RedisError):  # another refusal (an ACL's NOPERM, say)
        return RedisHealth(f"refuses writes: {redis_words(wrote)}", warning)
    return RedisHealth("ok", warning)


async def log_eviction_policy(redis: aioredis.Redis) -> None:
    """The gateway's check at start: a WARNING line when Redis evicts (said nothing when Redis
    is not reachable then; ``/readyz`` says it whenever asked)."""
    try:
        health = await probe_redis(redis)
    except Exception:  # the check must never stop the gateway; /readyz says the same
        log.debug("the check of Redis's eviction policy failed", exc_info=True)
        return
    if health.warning is not None:
        log.warning("%s (docs/deploy.md)", health.warning)


# The probe in flight for each Redis client (one per gateway), awaited by every /readyz that
# arrives meanwhile.
_IN_FLIGHT: weakref.WeakKeyDictionary[aioredis.Redis, asyncio.Task[RedisHealth]] = (
    weakref.WeakKeyDictionary()
)


async def shared_probe(redis: aioredis.Redis) -> RedisHealth:
    """:func:`probe_redis`, shared by the callers that arrive while one is in flight; a caller
    that goes away (a client disconnecting) leaves it running for the others."""
    task = _IN_FLIGHT.get(redis)
    if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
        task = asyncio.ensure_future(probe_redis(redis))
        _IN_FLIGHT[redis] = task
    return await asyncio.shield(task)
