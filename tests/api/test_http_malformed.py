"""Requests the HTTP parser rejects get the gateway's JSON error body, not uvicorn's text/plain."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from harness.gateway import Gateway
from tests.api.test_http_limits import _connect, _read_all, _status


@pytest.fixture(scope="module")
def gateway(more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways("gateway-malformed")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ids=["lower-case-method", "space-in-header-name", "bad-chunk-size", "two-lengths"],
)
def test_unparseable_requests_get_json_400(gateway: Gateway, request_bytes: bytes) -> None:
    with _connect(gateway) as sock:
        sock.sendall(request_bytes)
        response = _read_all(sock)
    assert _status(response) == 400, response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "malformed_request"
