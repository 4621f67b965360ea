"""The failed-key limit holds across gateway replicas: two real gateway processes over one real
Redis, behind a trusted proxy (``FDL_TRUSTED_PROXIES``), so each request picks its client
address."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack

import httpx
import pytest
import redis

from harness.gateway import ADMIN_KEY, Gateway, bearer
from tests.api.test_auth_failures import assert_failure_limited

JOBS = "/v1/jobs"
DATABASE = 12
BURST = 3


@pytest.fixture
def replicas(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways over one emptied Redis database, failed keys limited to a burst of
    ``BURST`` and one more a minute (none more within a test)."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    limits = {
        "FDL_AUTH_FAILURES_PER_MINUTE": "1",
        "FDL_AUTH_FAILURES_BURST": str(BURST),
        "FDL_TRUSTED_PROXIES": "127.0.0.1",
    }
    with ExitStack() as running:
        first = running.enter_context(lone_gateway("replica-1", url, **limits))
        second = running.enter_context(lone_gateway("replica-2", url, **limits))
        yield first, second


def get(gateway: Gateway, address: str, key: str) -> httpx.Response:
    headers = {"X-Forwarded-For": address, **bearer(key)}
    return httpx.get(f"{gateway.url}{JOBS}", headers=headers, timeout=10)


def test_wrong_keys_sent_to_both_replicas_meet_one_limit(
    replicas: tuple[Gateway, Gateway],
) -> None:
    """Wrong keys sent to the two replicas in turn get ``BURST`` 401s in all, not ``BURST`` at
    each; every later wrong key from the address is refused on both, while right keys are
    served on both throughout and other addresses keep their own budget."""
    attacker, other = "198.51.100.77", "198.51.100.78"
    statuses = []
    for attempt in range(4 * BURST):
        response = get(replicas[attempt % 2], attacker, f"guess-{attempt}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert_failure_limited(response)
        if attempt % 3 == 0:
            assert get(replicas[attempt % 2], attacker, ADMIN_KEY).status_code == 200
    assert statuses == [401] * BURST + [429] * (3 * BURST), statuses
    for replica in replicas:
        assert_failure_limited(get(replica, attacker, "one-more-guess"))
        assert get(replica, attacker, ADMIN_KEY).status_code == 200
        assert get(replica, other, "guess").status_code == 401
