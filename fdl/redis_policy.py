"""Redis's eviction policy (``maxmemory-policy``): anything but ``noeviction`` lets Redis delete
our keys at its ``maxmemory``, silently.

With ``allkeys-*`` any key goes: a job's record (a job answered 202 later answers 404) or the
training queue's list of messages (its jobs stay ``queued`` until a reaper sends them again).
``volatile-*`` deletes only keys with an expiry, and the job records and the queue have none; but
these do: the Idempotency-Key records (``fdl/job_scripts.py``: a retried submission would start a
second job), the submission lock (``api/submit_lock.py``: ``FDL_MAX_QUEUED_JOBS`` could be
passed), the rate limits' counts (``api/ratelimit.py``) and kombu's mutex of unacknowledged
messages. So every policy but ``noeviction`` is reported; a Redis at its ``maxmemory`` with
``noeviction`` refuses writes instead (``OOM``), which the job store waits out
(``fdl/store_retry.py``).

The policy is read with ``CONFIG GET``, which a managed Redis may disable or rename, else from
``INFO memory``; when neither answers nothing is said.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SAFE_POLICY = "noeviction"
CONFIG_NAME = "maxmemory-policy"
INFO_FIELD = "maxmemory_policy"
# How long the worker's check at start-up waits for Redis (it says nothing when Redis is slower).
CHECK_TIMEOUT_S = 2.0
log = logging.getLogger("fdl.redis")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def policy_from(config_reply: Any, info_reply: Any) -> str | None:
    """The policy that a ``CONFIG GET maxmemory-policy`` reply names, else an ``INFO memory``
    reply (either may be an error, kept in a pipeline's results); None when neither does."""
    if isinstance(config_reply, dict):
        for name, value in config_reply.items():
            if _text(name) == CONFIG_NAME and _text(value):
                return _text(value)
    if isinstance(info_reply, dict):
        return _text(info_reply.get(INFO_FIELD)) or None
    return None


def eviction_warning(policy: str | None) -> str | None:
    """What to say about ``policy``: None for ``noeviction`` or an unknown one."""
    if policy is None or policy == SAFE_POLICY:
        return None
    if policy.startswith("volatile-"):
        lost = (
            "keys with an expiry: Idempotency-Key records (a retried submission starts a "
            "second job), the submission lock and the rate limits' counts"
        )
    else:
        lost = (
            "any key: job records (a job answered 202 later answers 404) and the training "
            "queue's messages (its jobs stay queued until a reaper sends them again)"
        )
    return (
        f"Redis's maxmemory-policy is {policy}, not {SAFE_POLICY}: at its maxmemory it deletes "
        f"{lost}; set maxmemory-policy {SAFE_POLICY}"
    )


def read_policy(client: redis.Redis) -> str | None:
    """The policy of the Redis of ``client`` (one round trip); None when Redis does not say or
    does not answer."""
    pipe = client.pipeline(transaction=False)
    pipe.config_get(CONFIG_NAME)
    pipe.info("memory")
    try:
        config_reply, info_reply = pipe.execute(raise_on_error=False)
    except (redis.RedisError, OSError):
        return None
    return policy_from(config_reply, info_reply)


def check_policy(redis_url: str) -> str | None:
    """Reads the policy of the Redis at ``redis_url`` and logs an ERROR line when it evicts;
    the warning, or None (``noeviction``, or not known)."""
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=CHECK_TIMEOUT_S,
        socket_connect_timeout=CHECK_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),  # tried once: the worker's start waits no longer
    )
    try:
        warning = eviction_warning(read_policy(client))
    finally:
        client.close()
    if warning is not None:
        log.error("%s (docs/deploy.md)", warning)
    return warning


def check_when_worker_ready(redis_url: str) -> None:
    """Has the worker check the policy once it is ready (its broker connected, Celery's logging
    set up: the line is formatted as the worker's others)."""
    from celery.signals import worker_ready

    def check(**_: Any) -> None:
        check_policy(redis_url)

    worker_ready.connect(check, weak=False)
