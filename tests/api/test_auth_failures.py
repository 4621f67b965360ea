"""Failed authentications are limited per client address (wrong keys only: a right key is always
served), and anonymous IPv6 clients are counted by their /64: in-process apps over a real Redis
and model server, behind uvicorn's own X-Forwarded-For middleware (what ``FDL_TRUSTED_PROXIES=*``
runs), so each request picks its client address."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.main import create_app
from api.ratelimit import INVALID_ADDRESS, FailureLimiter, address_bucket
from harness.gateway import ADMIN_KEY, CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

JOBS = "/v1/jobs"
UNKNOWN_MODEL = "/v1/models/nothing_here"  # a 404 after auth and the rate limit, no Redis
DATABASE = 7


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    """This module's Redis database, emptied before each test: no test sees another's counts."""
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}")
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def gateway_app(redis_url: str, route_model_server: ModelServer, redis_db: redis.Redis) -> Any:
    """``gateway_app(**settings)``: a running app (one at a time: each registers collectors).
    Its limits wait up to 30 s for Redis, not 0.5 s: a check that a loaded machine delays past
    the default would let its request through (they fail open: tests/api/test_frozen_redis.py)."""

    @contextmanager
    def running(**update: Any) -> Iterator[TestClient]:
        settings = inprocess_settings(redis_url, route_model_server, database=DATABASE)
        update = {"rate_limit_timeout_s": 30.0, **update}
        app = ProxyHeadersMiddleware(create_app(settings.model_copy(update=update)), "*")
        with TestClient(app) as client:  # type: ignore[arg-type]
            yield client

    return running


def get(client: TestClient, path: str, address: str, key: str | None) -> httpx.Response:
    headers = {"X-Forwarded-For": address, **(bearer(key) if key is not None else {})}
    return client.get(path, headers=headers)


def assert_failure_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert "not valid" in error["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 60


def script_calls(redis_db: redis.Redis) -> int:
    """Lua script calls (the rate limits' one round trip each) the Redis server has run."""
    stats: dict[str, Any] = redis_db.info("commandstats")  # type: ignore[assignment]
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha"))


def test_wrong_keys_are_limited_per_address(gateway_app: Any) -> None:
    # The request limit off: failed authentications are limited all the same.
    limits = {"auth_failures_per_minute": 1, "auth_failures_burst": 3, "rate_limit_per_minute": 0}
    with gateway_app(**limits) as client:
        attacker, other = "198.51.100.7", "198.51.100.8"
        assert [get(client, JOBS, attacker, f"guess-{i}").status_code for i in range(3)] == [
            401
        ] * 3
        assert_failure_limited(get(client, JOBS, attacker, "guess-3"))
        assert_failure_limited(get(client, JOBS, attacker, "guess-4"))
        # Right keys from that address are served all the same: one client retrying an old key
        # must not lock out the others behind the same NAT address.
        assert get(client, JOBS, attacker, ADMIN_KEY).status_code == 200
        assert get(client, UNKNOWN_MODEL, attacker, CLASSIFY_KEY).status_code == 404
        assert_failure_limited(get(client, JOBS, attacker, "guess-5"))
        # No key is no guess: still the plain 401.
        assert get(client, JOBS, attacker, None).status_code == 401
        # Other addresses are not affected.
        assert get(client, JOBS, other, ADMIN_KEY).status_code == 200
        assert get(client, JOBS, other, "guess").status_code == 401
        # An IPv4-mapped IPv6 address is the same client.
        assert_failure_limited(get(client, JOBS, f"::ffff:{attacker}", "guess-6"))
        assert get(client, JOBS, f"::ffff:{attacker}", ADMIN_KEY).status_code == 200


def test_a_blocked_address_costs_redis_nothing_for_wrong_keys(
    gateway_app: Any, redis_db: redis.Redis
) -> None:
    """Once blocked, an address's wrong keys are refused in-process; its right keys cost their
    one rate-limit call, as anywhere."""
    limits = {"auth_failures_per_minute": 1, "auth_failures_burst": 1}
    address = "198.51.100.30"
    with gateway_app(**limits) as client:
        assert get(client, JOBS, address, "guess-1").status_code == 401
        assert_failure_limited(get(client, JOBS, address, "guess-2"))
        before = script_calls(redis_db)
        for i in range(10):
            assert_failure_limited(get(client, JOBS, address, f"guess-{i + 3}"))
        assert script_calls(redis_db) == before
        assert get(client, UNKNOWN_MODEL, address, ADMIN_KEY).status_code == 404
        assert script_calls(redis_db) - before == 1


def test_texts_that_are_not_addresses_share_one_bucket(gateway_app: Any) -> None:
    """A trusted proxy's X-Forwarded-For may carry any text: made-up values get no fresh budget
    each, for failed authentications nor for the anonymous rate limit."""
    limits = {
        "auth_failures_per_minute": 1,
        "auth_failures_burst": 2,
        "classify_open": True,
        "rate_limit_per_minute": 1,
        "rate_limit_burst": 1,
    }
    with gateway_app(**limits) as client:
        assert get(client, JOBS, "made-up-1", "guess-1").status_code == 401
        assert get(client, JOBS, "x" * 1000, "guess-2").status_code == 401
        assert_failure_limited(get(client, JOBS, "made-up-3", "guess-3"))
        assert_failure_limited(get(client, JOBS, "198.51.100.7.1", "guess-4"))
        assert get(client, JOBS, "198.51.100.40", "guess-5").status_code == 401
        assert get(client, UNKNOWN_MODEL, "made-up-a", None).status_code == 404
        limited = get(client, UNKNOWN_MODEL, "made-up-b", None)
        assert limited.status_code == 429 and "not valid" not in limited.json()["error"]["message"]
        assert get(client, UNKNOWN_MODEL, "198.51.100.41", None).status_code == 404


def test_ipv6_clients_are_counted_by_their_64(gateway_app: Any) -> None:
    limits = {"auth_failures_per_minute": 1, "auth_failures_burst": 2}
    with gateway_app(**limits) as client:
        assert get(client, JOBS, "2001:db8:1:2::1", "guess-1").status_code == 401
        assert get(client, JOBS, "2001:db8:1:2::2", "guess-2").status_code == 401
        # Another address of the same /64: the same client, over its limit.
        assert_failure_limited(get(client, JOBS, "2001:db8:1:2:ffff:ffff:ffff:ffff", "guess-3"))
        assert get(client, JOBS, "2001:db8:1:3::1", "guess-4").status_code == 401


def test_anonymous_ipv6_clients_share_their_64s_rate_limit(gateway_app: Any) -> None:
    limits = {"classify_open": True, "rate_limit_per_minute": 1, "rate_limit_burst": 1}
    with gateway_app(**limits) as client:
        assert get(client, UNKNOWN_MODEL, "2001:db8:5:6::1", None).status_code == 404
        limited = get(client, UNKNOWN_MODEL, "2001:db8:5:6:abcd::9", None)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert get(client, UNKNOWN_MODEL, "2001:db8:5:7::1", None).status_code == 404
        assert get(client, UNKNOWN_MODEL, "198.51.100.1", None).status_code == 404
        assert get(client, UNKNOWN_MODEL, "::ffff:198.51.100.1", None).status_code == 429


def test_replicas_share_the_count(gateway_app: Any) -> None:
    """A second gateway over the same Redis refuses the address's wrong key at its first failure
    there, and serves its right keys throughout."""
    limits = {"auth_failures_per_minute": 1, "auth_failures_burst": 2}
    attacker = "203.0.113.5"
    with gateway_app(**limits) as first:
        assert get(first, JOBS, attacker, "guess-1").status_code == 401
        assert get(first, JOBS, attacker, "guess-2").status_code == 401
        assert_failure_limited(get(first, JOBS, attacker, "guess-3"))
        assert get(first, JOBS, attacker, ADMIN_KEY).status_code == 200
    with gateway_app(**limits) as second:
        assert get(second, JOBS, attacker, ADMIN_KEY).status_code == 200
        assert_failure_limited(get(second, JOBS, attacker, "guess-4"))  # the count in Redis
        assert_failure_limited(get(second, JOBS, attacker, "guess-5"))  # remembered here
        assert get(second, JOBS, attacker, ADMIN_KEY).status_code == 200


def test_the_limiter_is_built_at_start(gateway_app: Any) -> None:
    """Start-up builds the failed-key limiter over the app's Redis client, as the request limiter:
    no request builds it, and a restarted app gets one over its new client."""
    with gateway_app(auth_failures_per_minute=1, auth_failures_burst=1) as client:
        app = client.app.app  # inside ProxyHeadersMiddleware
        first = app.state.auth_failures
        assert isinstance(first, FailureLimiter)
        assert first.limiter.client is app.state.redis
        assert (first.limiter.per_minute, first.limiter.burst) == (1, 1)
        assert get(client, JOBS, "198.51.100.50", "guess-1").status_code == 401
    with TestClient(client.app) as restarted:
        assert app.state.auth_failures is not first
        assert app.state.auth_failures.limiter.client is app.state.redis
        assert_failure_limited(get(restarted, JOBS, "198.51.100.50", "guess-2"))


def test_good_requests_cost_redis_nothing_more(gateway_app: Any, redis_db: redis.Redis) -> None:
    """One rate-limit script call per request with a right key, as before failures counted."""
    with gateway_app() as client:
        assert get(client, UNKNOWN_MODEL, "198.51.100.20", ADMIN_KEY).status_code == 404
        before = script_calls(redis_db)
        for _ in range(10):
            assert get(client, UNKNOWN_MODEL, "198.51.100.20", ADMIN_KEY).status_code == 404
        assert script_calls(redis_db) - before == 10


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("testclient", INVALID_ADDRESS),
        ("not:an:address", INVALID_ADDRESS),
        ("198.51.100.7.1", INVALID_ADDRESS),
        ("", INVALID_ADDRESS),
    ],
)
def test_address_buckets(host: str, bucket: str) -> None:
    assert address_bucket(host) == bucket


def test_long_text_is_the_shared_bucket() -> None:
    """A trusted proxy may pass any text as the client: each is the one shared bucket."""
    assert address_bucket("x" * 30_000) == address_bucket("x" * 29_999 + "y") == INVALID_ADDRESS
