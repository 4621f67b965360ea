"""A job store of its own for a test file: one database of the session's Redis, emptied first."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.commands.core import Script

from fdl.jobs import JobStore


def store_on_db(redis_url: str, db: int) -> Iterator[JobStore]:
    """For a fixture to ``yield from``: a :class:`JobStore` on database ``db`` of the Redis at
    ``redis_url``, emptied, closed afterwards."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}", decode_responses=True)
    client.flushdb()
    try:
        yield JobStore(client)
    finally:
        client.close()


@contextlib.contextmanager
def loaded_store(redis_url: str, db: int) -> Iterator[JobStore]:
    """A job store on database ``db`` of the Redis at ``redis_url``, emptied, its scripts loaded
    as on any Redis that ran them before: a lost reply is then one of a script that ran."""
    for direct in store_on_db(redis_url, db):
        for script in vars(direct).values():
            if isinstance(script, Script):
                direct.redis.script_load(script.script)
        yield direct
