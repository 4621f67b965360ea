"""Keyed JSON routes (``POST /v1/jobs``, ``POST /v1/models/{model}/labels/{label}``) check the
key before they read the body, take at most FDL_MAX_JSON_BODY_BYTES, and a 422 names at most
MAX_VALIDATION_ERRORS errors whatever the body (api/admin_route.py, api/errors.py). Real gateways
on the real Redis, with no model server: none of these requests gets as far as needing one."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.routing import APIRoute

from api.admin_route import KeyFirstRoute, key_check_of
from api.errors import MAX_VALIDATION_ERRORS
from api.main import ROUTERS
from api.settings import GatewaySettings
from harness.gateway import ADMIN_KEY, CLASSIFY_KEY, FILE_ADMIN_KEY, Gateway, gateway_running

ROUTES = ["/v1/jobs", "/v1/models/digits/labels/canary"]
LIMIT: int = GatewaySettings.model_fields["max_json_body_bytes"].default
# How long the gateway waits for a body that does not come (408): an answer that needed the body
# comes after it, one that did not comes at once.
BODY_TIMEOUT_S = 5
# A JSON bomb under FDL_MAX_BODY_BYTES (10 MB), of which only the start is ever sent.
BOMB_LENGTH = 9_900_000
BOMB_START = b"[" + b"{}," * 10_000
RATE_LIMITED_DB = 13


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    where = tmp_path_factory.mktemp("admin-bodies")
    with gateway_running(
        "gateway-admin-bodies",
        logs_dir,
        redis_url,
        None,
        where / "models",
        where / "secrets",
        FDL_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    ) as running:
        yield running


def _raw_post(gateway: Gateway, path: str, head: dict[str, str], body: bytes) -> tuple[int, dict]:
    """POST with the headers ``head`` and only ``body`` sent (``head`` may declare more); the
    status and the JSON error of the answer, read by its Content-Length, not waiting for a
    close."""
    port = int(gateway.url.rsplit(":", 1)[1])
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S * 4) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += _recv(sock)
        header_block, _, content = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", header_block)
        assert length is not None, header_block
        while len(content) < int(length[1]):
            content += _recv(sock)
    return int(header_block.split(b" ", 2)[1]), json.loads(content)


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the gateway closed the connection without an answer"
    return chunk


def _unknown_keys(count: int) -> bytes:
    return b"{" + b",".join(b'"k%d":1' % i for i in range(count)) + b"}"


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("not-a-key-of-this-gateway", 401, "unauthorized"),
        (CLASSIFY_KEY, 403, "forbidden"),
    ],
    ids=["anonymous", "wrong-key", "classify-key"],
)
def test_a_request_without_the_admin_key_is_refused_before_its_body_is_read(
    gateway: Gateway, path: str, key: str | None, status: int, code: str
) -> None:
    """A 9.9 MB JSON bomb of which only the start is sent: the answer comes without the rest
    (before, FastAPI waited for the whole body to parse it: the body timeout's 408)."""
    head = {"Content-Length": str(BOMB_LENGTH)}
    if key is not None:
        head["Authorization"] = f"Bearer {key}"
    started = time.monotonic()
    got, body = _raw_post(gateway, path, head, BOMB_START)
    assert (got, body["error"]["code"]) == (status, code), body
    assert time.monotonic() - started < BODY_TIMEOUT_S


@pytest.mark.parametrize("path", ROUTES)
def test_an_anonymous_body_that_is_not_json_gets_401(gateway: Gateway, path: str) -> None:
    response = httpx.post(
        f"{gateway.url}{path}",
        content=b'{"model": not json',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 401, response.text  # was 422: parsed before the key check
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ROUTES)
def test_an_admin_body_over_the_json_limit_gets_413(gateway: Gateway, path: str) -> None:
    # Declared: refused from Content-Length, nothing of the body sent.
    got, body = _raw_post(
        gateway, path, {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Length": "100000"}, b""
    )
    assert (got, body["error"]["code"]) == (413, "body_too_large"), body
    assert f"{LIMIT:,} bytes" in body["error"]["message"]
    # Chunked: refused once the bytes received pass the limit.
    padded = b'{"version": 2' + b" " * LIMIT + b"}"
    response = httpx.post(
        f"{gateway.url}{path}",
        content=iter([padded[:1000], padded[1000:]]),
        headers={**gateway.admin(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("path", ROUTES)
def test_thousands_of_unknown_keys_get_a_short_422(gateway: Gateway, path: str) -> None:
    body = _unknown_keys(5000)
    assert len(body) < LIMIT
    response = httpx.post(
        f"{gateway.url}{path}",
        content=body,
        headers={**gateway.admin(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert len(error["details"]) == MAX_VALIDATION_ERRORS
    assert {"field": "k1", "message": "Extra inputs are not permitted"} in error["details"]
    counted = re.search(r"; and (\d+) more \((\d+) errors in all\)$", error["message"])
    assert counted is not None, error["message"][:500]
    # Every unknown key, and the required field that is missing.
    assert int(counted[2]) == 5001
    assert int(counted[1]) == 5001 - MAX_VALIDATION_ERRORS
    assert len(response.content) < 5000


@pytest.fixture(scope="module")
def rate_limited(
    redis_url: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose keys may make 3 requests (and 1 more a minute), on a database of its
    own, emptied first."""
    own_db = f"{redis_url.rsplit('/', 1)[0]}/{RATE_LIMITED_DB}"
    redis.Redis.from_url(own_db).flushdb()
    where = tmp_path_factory.mktemp("admin-bodies-limited")
    with gateway_running(
        "gateway-admin-bodies-limited",
        logs_dir,
        own_db,
        None,
        where / "models",
        where / "secrets",
        FDL_RATE_LIMIT_PER_MINUTE="1",
        FDL_RATE_LIMIT_BURST="3",
    ) as running:
        yield running


def test_a_key_checked_before_the_body_counts_once_against_its_rate_limit(
    rate_limited: Gateway,
) -> None:
    """Checked before the body, the key is not checked (or counted) again by the route's
    dependency: a key's burst of 3 is 3 requests (a 413, refused before the dependency runs,
    then two 422s, which run it), and only then 429."""
    key = {"Authorization": f"Bearer {FILE_ADMIN_KEY}"}
    over = {**key, "Content-Length": str(LIMIT + 1)}
    statuses = [_raw_post(rate_limited, ROUTES[0], over, b"")[0]]
    statuses += [
        _raw_post(rate_limited, path, {**key, "Content-Length": "2"}, b"{}")[0] for path in ROUTES
    ]
    statuses.append(_raw_post(rate_limited, ROUTES[1], over, b"")[0])
    assert statuses == [413, 422, 422, 429]


def test_every_keyed_route_with_a_body_checks_the_key_first() -> None:
    """A router added later with a keyed JSON route must use KeyFirstRoute too."""
    keyed = [
        route
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        and route.body_field is not None
        and key_check_of(route.dependant) is not None
    ]
    assert {route.path for route in keyed} >= {"/v1/jobs", "/v1/models/{model}/labels/{label}"}
    assert all(isinstance(route, KeyFirstRoute) for route in keyed)
