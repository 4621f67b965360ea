"""A task that the training worker of a test imports (``celery worker --include``): it leaves
the worker's Redis over its ``maxmemory`` without eviction just before it returns, so that the
acknowledgement of its own message, the worker's next write, is the one Redis refuses."""

from __future__ import annotations

import os

import redis
from celery import shared_task

FILL_REDIS_TASK = "tests.fill_redis"
# Set by the task's first run: a redelivery of its message leaves Redis as it is.
FILLED_KEY = "fdl-tests:redis-filled"


@shared_task(name=FILL_REDIS_TASK)
def fill_redis() -> None:
    client = redis.Redis.from_url(os.environ["FDL_REDIS_URL"])
    try:
        if client.set(FILLED_KEY, 1, nx=True):
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # below what it uses: every growing write fails
    finally:
        client.close()
