"""An ``Authorization`` header of a scheme other than ``Bearer`` (``Basic`` from an auth proxy or
a browser's saved login, ``Negotiate``) is no API key: the gateway reads ``X-API-Key`` as if that
header were absent, open classification stays open, and it is no failed key. ``Bearer`` with a
wrong or an empty key is still a failed key. In-process apps over a real Redis and model server
behind uvicorn's X-Forwarded-For middleware, and one real gateway process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.main import create_app
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, Gateway, inprocess_settings
from harness.model_server import ModelServer
from tests.api.test_auth_failures import assert_failure_limited

JOBS = "/v1/jobs"
CLASSIFY = "/v1/models/digits:classify"
DATABASE = 13
OTHER_SCHEMES = {
    "basic": "Basic dXNlcjpwYXNz",
    "negotiate": "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1",
    "digest": 'Digest username="u", realm="r", nonce="n", response="0"',
}
# Each request may exceed the limit of failed keys at once, were it counted as one.
ONE_FAILURE = {"auth_failures_per_minute": 1, "auth_failures_burst": 1}


@pytest.fixture
def gateway_app(redis_url: str, route_model_server: ModelServer) -> Any:
    """``gateway_app(**settings)``: a running app over this module's emptied Redis database."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()

    @contextmanager
    def running(**update: Any) -> Iterator[TestClient]:
        settings = inprocess_settings(redis_url, route_model_server, database=DATABASE)
        app = ProxyHeadersMiddleware(create_app(settings.model_copy(update=update)), "*")
        with TestClient(app) as test_client:  # type: ignore[arg-type]
            yield test_client

    return running


def headers(address: str, authorization: str | None, api_key: str | None = None) -> dict[str, str]:
    sent = {"X-Forwarded-For": address}
    if authorization is not None:
        sent["Authorization"] = authorization
    if api_key is not None:
        sent["X-API-Key"] = api_key
    return sent


def classify(client: TestClient, sent: dict[str, str]) -> httpx.Response:
    return client.post(CLASSIFY, files=[("file", ("a.png", BLANK_PNG, "image/png"))], headers=sent)


def assert_key_required(response: httpx.Response) -> None:
    """The 401 of a request without a key (not that of a key that is not valid)."""
    assert response.status_code == 401, response.text
    assert "an API key is required" in response.json()["error"]["message"]


@pytest.mark.parametrize("scheme", OTHER_SCHEMES.values(), ids=OTHER_SCHEMES.keys())
def test_x_api_key_is_read_beside_another_scheme(gateway_app: Any, scheme: str) -> None:
    with gateway_app(**ONE_FAILURE) as client:
        address = "198.51.100.60"
        assert client.get(JOBS, headers=headers(address, scheme, ADMIN_KEY)).status_code == 200
        assert classify(client, headers(address, scheme, CLASSIFY_KEY)).status_code == 200
        # The role is the X-API-Key's: a classify key may not administer.
        forbidden = client.get(JOBS, headers=headers(address, scheme, CLASSIFY_KEY))
        assert forbidden.status_code == 403, forbidden.text
        # A wrong X-API-Key is a failed key as ever: the first one uses the burst of one.
        assert client.get(JOBS, headers=headers(address, scheme, "guess-1")).status_code == 401
        assert_failure_limited(client.get(JOBS, headers=headers(address, scheme, "guess-2")))


@pytest.mark.parametrize("scheme", OTHER_SCHEMES.values(), ids=OTHER_SCHEMES.keys())
def test_another_scheme_alone_is_no_key(gateway_app: Any, scheme: str) -> None:
    """Open classification serves it anonymously, keyed routes answer the 401 of no key, and
    none of it counts as a failed key: the address's first wrong Bearer key is still a 401."""
    with gateway_app(classify_open=True, **ONE_FAILURE) as client:
        address = "198.51.100.61"
        for _ in range(3):
            served = classify(client, headers(address, scheme))
            assert served.status_code == 200, served.text
            assert_key_required(client.get(JOBS, headers=headers(address, scheme)))
        assert client.get(JOBS, headers=headers(address, "Bearer guess-1")).status_code == 401
        assert_failure_limited(client.get(JOBS, headers=headers(address, "Bearer guess-2")))


@pytest.mark.parametrize(
    "empty", ["Bearer", "Bearer ", "bearer   "], ids=["bare", "space", "lower"]
)
def test_bearer_without_a_key_is_a_failed_key(gateway_app: Any, empty: str) -> None:
    """A client that says Bearer meant to send a key (say, of an unset variable): its request is
    a key that is not valid, counted, and Bearer wins over X-API-Key as always."""
    with gateway_app(**ONE_FAILURE) as client:
        address = "198.51.100.62"
        first = client.get(JOBS, headers=headers(address, empty, ADMIN_KEY))
        assert first.status_code == 401 and "not valid" in first.json()["error"]["message"]
        assert_failure_limited(client.get(JOBS, headers=headers(address, empty)))
        assert client.get(JOBS, headers=headers(address, f"Bearer {ADMIN_KEY}")).status_code == 200


def test_a_gateway_process_ignores_basic(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]]
) -> None:
    """The hunter's case on a real ``python -m api`` behind a trusted proxy: ``Basic`` with a
    right X-API-Key is served, and more ``Basic`` requests than the failed-key burst lock
    nothing out."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{DATABASE}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    limits = {
        "FDL_AUTH_FAILURES_PER_MINUTE": "1",
        "FDL_AUTH_FAILURES_BURST": "2",
        "FDL_TRUSTED_PROXIES": "127.0.0.1",
    }
    basic = OTHER_SCHEMES["basic"]
    with lone_gateway("gateway-basic", url, **limits) as gateway:

        def get(sent: dict[str, str]) -> httpx.Response:
            return httpx.get(f"{gateway.url}{JOBS}", headers=sent, timeout=10)

        address = "198.51.100.63"
        assert get(headers(address, basic, ADMIN_KEY)).status_code == 200
        for _ in range(5):
            assert_key_required(get(headers(address, basic)))
        assert get(headers(address, basic, ADMIN_KEY)).status_code == 200
        assert get(headers(address, "Bearer guess-1")).status_code == 401
        assert get(headers(address, "Bearer guess-2")).status_code == 401
        assert_failure_limited(get(headers(address, "Bearer guess-3")))
