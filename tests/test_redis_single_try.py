"""The Redis clients we build try each command once: a Redis that accepts connections and never
answers (frozen, a half-open connection) costs one socket timeout per call, not redis-py's default
retries. ``redis.Redis(...)`` built with its constructor retries a timed-out command ten times
with back-off (redis-py 8: eleven connections, about 6 s for a 0.2 s timeout); ``from_url``
builds connections that do not. The gateway's bounds rest on one try per call: the deadline after
which a retry under an idempotency key may take over an unconfirmed submission
(``api/idempotency.py``, SUBMISSION_STORE_WAITS), the readiness probe's and the rate limiter's
budgets. A redis-py upgrade that changed ``from_url`` would fail here rather than stretch them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from fdl.jobs import JobStore

TIMEOUT_S = 0.2


class SilentServer:
    """A TCP listener that accepts every connection and never answers on any of them."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_the_gateways_job_store_client_tries_once(silent: SilentServer) -> None:
    client = redis.Redis.from_url(  # as api/main.py builds the gateway's job store
        silent.url,
        decode_responses=True,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
    )
    with pytest.raises(redis.TimeoutError):
        JobStore(client).get("0" * 32)
    assert len(silent.accepted) == 1


def test_the_workers_job_store_client_tries_once(silent: SilentServer) -> None:
    store = JobStore.from_url(silent.url)
    pool = store.redis.connection_pool
    pool.connection_kwargs |= {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
    with pytest.raises(redis.TimeoutError):
        store.get("0" * 32)
    assert len(silent.accepted) == 1


def test_the_gateways_asyncio_client_tries_once(silent: SilentServer) -> None:
    async def one_call() -> None:
        client = aioredis.Redis.from_url(silent.url, socket_timeout=TIMEOUT_S)
        try:
            with pytest.raises(redis.TimeoutError):
                await client.get("key")
        finally:
            await client.aclose()

    asyncio.run(one_call())
    assert len(silent.accepted) == 1
