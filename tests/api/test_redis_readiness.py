"""What ``/readyz`` says about Redis, by one rule (api/redis_health.py), with a real Redis of the
test's own under a real gateway and model server:

- Redis answers but refuses writes, at its ``maxmemory`` (``OOM``), as a replica (``READONLY``)
  or unable to persist (``MISCONF``, which refuses ``PING`` too): 200 ``"status": "degraded"``,
  ``checks.redis`` ``refuses writes: <Redis's words>``; classification, which needs no Redis
  writes, still answers. Before, ``OOM`` and ``READONLY`` answered 200 ``ok`` and ``MISCONF``
  503 ``error: ResponseError``, which took every gateway out of rotation;
- Redis unreachable (stopped; at its ``maxclients``, where the gateway's pooled connections
  still answer but the job routes' new ones are refused): 503, ``unreachable: <what>``. Before,
  ``maxclients`` answered 200 ``ok`` while ``GET /v1/jobs`` answered 503;
- an evicting Redis (``maxmemory-policy`` other than ``noeviction``): a warning in the body
  (still 200) and in the gateway's log at start. Before, nothing said it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
import redis

from harness.gateway import Gateway, classify, log_lines
from harness.procs import wait_for
from harness.redis import RestartableRedis
from tests.chaos.redis_refusals import ALL_REFUSALS

Gateways = Callable[..., AbstractContextManager[Gateway]]
CLASSIFY = "/v1/models/digits:classify"
FLOOD = 200
STARTUP_WARNING = "Redis's maxmemory-policy is allkeys-lru, not noeviction"


@pytest.fixture(scope="module")
def private_redis(
    tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path_factory.mktemp("redis-ready"), logs_dir, "redis-ready")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(private_redis: RestartableRedis, gateways_here: Gateways) -> Iterator[Gateway]:
    with gateways_here("gateway-redis-ready", redis_url=private_redis.url) as running:
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text  # each test starts from a sound Redis
        assert ready.json()["checks"] == {"redis": "ok", "model_server": "ok"}, ready.text
        yield http


@pytest.mark.parametrize("refusal", sorted(ALL_REFUSALS))
def test_a_redis_that_refuses_writes_leaves_the_gateway_ready_and_says_so(
    private_redis: RestartableRedis, gateway: Gateway, client: httpx.Client, refusal: str
) -> None:
    with ALL_REFUSALS[refusal](private_redis) as code:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "degraded", body
        assert body["checks"]["model_server"] == "ok"
        assert body["checks"]["redis"].startswith(f"refuses writes: {code} "), body
        assert len(body["checks"]["redis"]) <= len("refuses writes: ") + 200
        head = client.head("/readyz")
        assert (head.status_code, head.content) == (200, b"")
        # Classification needs no Redis writes (the rate limiter fails open).
        assert classify(f"{gateway.url}{CLASSIFY}", gateway.classifier()).status_code == 200
    assert client.get("/readyz").json()["checks"]["redis"] == "ok"


def test_a_stopped_redis_is_unreachable(
    private_redis: RestartableRedis, client: httpx.Client
) -> None:
    private_redis.stop()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["checks"]["redis"] == "unreachable: ConnectionError: Connection refused"
        assert str(private_redis.port) not in ready.text  # no address to whoever asks
        assert client.head("/readyz").status_code == 503
    finally:
        private_redis.start()
    assert client.get("/readyz").status_code == 200


def test_a_redis_at_its_maxclients_is_unreachable(
    private_redis: RestartableRedis, client: httpx.Client
) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.ping()  # this connection stays open: the way back
    connected = int(admin.info("clients")["connected_clients"])
    admin.config_set("maxclients", connected)  # no new connection; those open keep answering
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["redis"] == (
            "unreachable: ERR max number of clients reached"
        ), ready.text
    finally:
        admin.config_set("maxclients", 10000)
        admin.close()
    assert client.get("/readyz").status_code == 200


def test_a_flood_of_readiness_probes_shares_redis_probes(
    private_redis: RestartableRedis, gateway: Gateway, client: httpx.Client
) -> None:
    """Each probe opens a connection of its own; 200 concurrent /readyz share the ones in flight
    (before, 200 connections at once: a flood from anyone who reaches the port could fill
    Redis's ``maxclients`` and so stop the job routes)."""
    admin = redis.Redis(port=private_redis.port)
    before = int(admin.info("stats")["total_connections_received"])

    async def flood() -> list[int]:
        limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
            answers = await asyncio.gather(*(http.get("/readyz") for _ in range(FLOOD)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(flood()) == [200] * FLOOD
    opened = int(admin.info("stats")["total_connections_received"]) - before - 1  # admin's
    admin.close()
    assert opened <= FLOOD // 4, f"{opened} Redis connections for {FLOOD} concurrent /readyz"


@pytest.mark.parametrize(
    ("policy", "named"),
    [("allkeys-lru", "job records"), ("volatile-ttl", "Idempotency-Key records")],
)
def test_an_evicting_redis_is_warned_about_while_ready(
    private_redis: RestartableRedis, client: httpx.Client, policy: str, named: str
) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.config_set("maxmemory-policy", policy)
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["checks"]["redis"] == "ok", body
        [warning] = body["warnings"]
        assert f"maxmemory-policy is {policy}, not noeviction" in warning
        assert named in warning
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()
    after = client.get("/readyz").json()
    assert (after["status"], after["warnings"]) == ("ready", []), after


def test_the_gateway_logs_an_evicting_redis_at_start(
    private_redis: RestartableRedis, gateways_here: Gateways
) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with gateways_here("gateway-evicting-redis", redis_url=private_redis.url) as started:
            [line] = wait_for(
                lambda: [
                    line
                    for line in log_lines(started.process)
                    if STARTUP_WARNING in line.get("message", "")
                ],
                10,
                "the gateway's warning about the eviction policy",
                check=started.process.ensure_alive,
            )
            assert (line["level"], line["logger"]) == ("warning", "fdl.gateway"), line
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.close()
