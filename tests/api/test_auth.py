"""API keys with roles, open or keyed classification, and the per-key rate limit."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from harness.gateway import ADMIN_KEY, CLASSIFY_KEY, FILE_ADMIN_KEY, Gateway, bearer
from harness.gateway import classify as post_image
from harness.prometheus import samples

JOBS = "/v1/jobs"
CLASSIFY = "/v1/models/digits:classify"


def classify(gateway: Gateway, headers: dict[str, str]) -> httpx.Response:
    return post_image(f"{gateway.url}{CLASSIFY}", headers)


def test_admin_routes_need_a_key(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}{JOBS}", timeout=5)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        bearer("wrong-key"),
        bearer(ADMIN_KEY + "x"),
        bearer(ADMIN_KEY[:-1]),
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "nope"},
    ],
    ids=["wrong", "longer", "prefix", "basic", "empty", "x-api-key-wrong"],
)
def test_invalid_keys_are_401(gateway: Gateway, headers: dict[str, str]) -> None:
    assert httpx.get(f"{gateway.url}{JOBS}", headers=headers, timeout=5).status_code == 401


def test_classify_key_may_not_administer(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}{JOBS}", headers=bearer(CLASSIFY_KEY), timeout=5)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    promote = httpx.post(
        f"{gateway.url}/v1/models/digits/labels/canary",
        json={"version": 2},
        headers=bearer(CLASSIFY_KEY),
        timeout=5,
    )
    assert promote.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [bearer(ADMIN_KEY), bearer(FILE_ADMIN_KEY), {"X-API-Key": ADMIN_KEY}],
    ids=["env", "secret-file", "x-api-key"],
)
def test_admin_keys_from_env_and_file(gateway: Gateway, headers: dict[str, str]) -> None:
    assert httpx.get(f"{gateway.url}{JOBS}", headers=headers, timeout=5).status_code == 200


def test_keyed_classification(gateway: Gateway) -> None:
    assert classify(gateway, {}).status_code == 401
    assert classify(gateway, bearer("wrong")).status_code == 401
    assert classify(gateway, bearer(CLASSIFY_KEY)).status_code == 200
    assert classify(gateway, bearer(ADMIN_KEY)).status_code == 200


def test_keys_never_reach_the_log(gateway: Gateway) -> None:
    classify(gateway, bearer(CLASSIFY_KEY))
    httpx.get(f"{gateway.url}{JOBS}", headers=bearer(ADMIN_KEY), timeout=5)
    log = gateway.process.log_path.read_text(errors="replace")
    assert "GET /v1/jobs" in log
    for key in (ADMIN_KEY, FILE_ADMIN_KEY, CLASSIFY_KEY):
        assert key not in log


@pytest.fixture(scope="module")
def open_gateway(redis_url: str, more_gateways: Callable[..., Gateway]) -> Gateway:
    """Open classification; 3 requests of burst, then one per 20 s per identity."""
    # Its own Redis database: its tight limits must not spend the shared gateway's budgets.
    own_db = redis_url.rsplit("/", 1)[0] + "/1"
    return more_gateways(
        "gateway-open",
        redis_url=own_db,
        FDL_CLASSIFY_OPEN="true",
        FDL_RATE_LIMIT_PER_MINUTE="3",
        FDL_RATE_LIMIT_BURST="3",
    )


def test_open_classification_and_rate_limit(open_gateway: Gateway) -> None:
    statuses = [classify(open_gateway, {}).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    assert statuses[3:] == [429, 429]
    limited = classify(open_gateway, {})
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 20
    # Limits are per identity: a key has its own budget.
    assert classify(open_gateway, bearer(CLASSIFY_KEY)).status_code == 200
    # Open classification does not open administration.
    assert httpx.get(f"{open_gateway.url}{JOBS}", timeout=5).status_code == 401
    metrics = httpx.get(f"{open_gateway.url}/metrics", timeout=5).text
    assert samples(metrics, "fdl_gateway_rate_limited_total") == [3.0]
