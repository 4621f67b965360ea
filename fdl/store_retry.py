"""Retry a job-store operation while Redis is unreachable or out of memory (tenacity), for a
bounded time.

Used by :class:`fdl.jobs.JobStore`: a store whose ``retry_for_s`` is positive (the worker's)
waits out a Redis restart, or a Redis at its ``maxmemory`` that refuses writes; one whose
``retry_for_s`` is 0 (the gateway's) fails at once.

A retry runs the method again with the same arguments, also when the first try took effect and
only its reply was lost. A write that is not idempotent by itself therefore carries a token made
before the retried method is entered (an argument of it), which its script recognises; a token
made inside the retried method would be a new one on every try.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import redis

log = logging.getLogger("fdl.jobs")
# Errors that pass: a Redis restart's (BusyLoadingError, while it reloads its data, is one of the
# connection errors), and the refusal of a Redis at its maxmemory without eviction ("OOM command
# not allowed"). Redis refuses a script at its first write, before it changed anything, and
# a command queued in MULTI before EXEC, so the retry finds nothing half done. Anything else
# (a wrong type, a script error) is a bug and is not retried.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError)


class Retries(Protocol):
    retry_for_s: float
    _local: threading.local


M = TypeVar("M", bound=Callable[..., Any])


def retried(method: M) -> M:
    """Run a store operation under the store's retry policy; an operation called from inside
    another (``finish`` calls ``transition``) is retried as part of the outer one only."""

    @functools.wraps(method)
    def wrapper(self: Retries, *args: Any, **kwargs: Any) -> Any:
        if self.retry_for_s <= 0 or getattr(self._local, "retrying", False):
            return method(self, *args, **kwargs)
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
                retry=retry_if_exception_type(TRANSIENT_ERRORS),
                stop=stop_after_delay(self.retry_for_s),
                wait=wait_exponential(multiplier=0.2, max=2),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            )
            return retrying(method, self, *args, **kwargs)
        finally:
            self._local.retrying = False

    return cast(M, wrapper)
