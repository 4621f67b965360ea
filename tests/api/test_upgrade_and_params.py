"""Requests a lax reading used to get wrong, against the real gateway process: a WebSocket
``Upgrade`` (served as the plain HTTP request it also is, with the app's JSON answer; one that
declares a body, which is never read, on a connection closed after it), ``top_k``
in anything but plain ASCII decimal, a ``top_k`` sent as a file part, and a report file name with
a trailing newline."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import uuid
from typing import BinaryIO

import httpx
import pytest

from harness.gateway import BLANK_PNG, CLASSIFY_KEY, Gateway, log_lines, post
from harness.procs import wait_for
from harness.prometheus import scrape, total

CLASSIFY = "/v1/models/digits:classify"
UPGRADE = (
    "Connection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def _exchange(gateway: Gateway, requests: list[bytes]) -> list[tuple[int, dict[str, str], bytes]]:
    """Each request in turn on one connection: its status, headers and (Content-Length) body."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        answers = []
        for request in requests:
            sock.sendall(request)
            answers.append(_answer(reader))
    return answers


def _answer(reader: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def _requests_counted(gateway: Gateway, status: str) -> float:
    metrics = scrape(f"{gateway.url}/metrics")
    labels = {"route": "/v1/models", "method": "GET", "status": status}
    return total(metrics, "fdl_gateway_requests_total", **labels)


def test_websocket_upgrade_is_served_as_plain_http(gateway: Gateway) -> None:
    before = _requests_counted(gateway, "401")
    request_id = f"upgrade-{uuid.uuid4().hex}"
    keyless = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Request-ID: {request_id}\r\n{UPGRADE}\r\n"
    keyed = (
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\n{UPGRADE}"
        f"Authorization: Bearer {CLASSIFY_KEY}\r\n\r\n"
    )
    # Both on one connection: the upgrade is ignored and the connection stays plain HTTP.
    (status, headers, body), (keyed_status, keyed_headers, keyed_body) = _exchange(
        gateway, [keyless.encode(), keyed.encode()]
    )
    assert status == 401, body
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == request_id
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert keyed_status == 200, keyed_body
    assert keyed_headers["content-type"] == "application/json" and keyed_headers["x-request-id"]
    assert "digits" in {model["name"] for model in json.loads(keyed_body)["models"]}
    # The request has its access line and is counted, as any other.
    wait_for(
        lambda: any(line.get("request_id") == request_id for line in log_lines(gateway.process)),
        10,
        "the upgrade request's access line",
    )
    assert _requests_counted(gateway, "401") >= before + 1
    # uvicorn's advice to install a WebSocket library is not logged for each such request.
    assert not any("WebSocket" in line.get("message", "") for line in log_lines(gateway.process))


def test_the_body_of_an_upgrade_request_is_never_read_as_a_request(gateway: Gateway) -> None:
    """httptools stops at an Upgrade request's headers: the body it declares, arriving later,
    was parsed and answered as the next request on the connection (behind a proxy that shares
    its connections, a request smuggled in for another client). The connection closes instead."""
    inner = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLASSIFY_KEY}\r\n\r\n"
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n{UPGRADE}Content-Type: application/json\r\n"
        f"Content-Length: {len(inner)}\r\n\r\n"
    )
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")
        sock.sendall(head.encode())
        status, headers, body = _answer(reader)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized", body
        with contextlib.suppress(OSError):  # the gateway may have closed it already
            sock.sendall(inner.encode())  # the declared body, once the answer is in
        try:
            after = reader.readline()
        except ConnectionResetError:
            after = b""
    assert after == b"", after  # no answer to the body: the connection was closed
    assert headers["connection"] == "close"


# int() reads all of these; top_k is plain ASCII decimal.
NOT_DECIMAL = ["\u0663", "\uff13", " 3 ", "+3", "3\n", "3_0", "-3", "", "3.0", "1" * 17]
NOT_DECIMAL_IDS = [
    "arabic-indic",
    "fullwidth",
    "spaces",
    "plus",
    "newline",
    "underscore",
    "minus",
    "empty",
    "decimal-point",
    "too-long",
]


def _assert_invalid_top_k(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_top_k" and "top_k" in error["message"], error


def _top_k_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return len(response.json()["predictions"][0]["top_k"])


def _json_body(top_k: object) -> dict[str, object]:
    return {"instances": [{"b64": base64.b64encode(BLANK_PNG).decode()}], "top_k": top_k}


@pytest.mark.parametrize("value", NOT_DECIMAL, ids=NOT_DECIMAL_IDS)
def test_top_k_not_in_ascii_digits_is_422_everywhere(gateway: Gateway, value: str) -> None:
    _assert_invalid_top_k(post(gateway, CLASSIFY, json=_json_body(value)))
    raw_headers = {**gateway.classifier(), "Content-Type": "image/png"}
    raw = post(gateway, CLASSIFY, params={"top_k": value}, content=BLANK_PNG, headers=raw_headers)
    _assert_invalid_top_k(raw)
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    _assert_invalid_top_k(post(gateway, CLASSIFY, files=files, data={"top_k": value}))


@pytest.mark.parametrize("value", [True, 3.0, [3], {"k": 3}], ids=["bool", "float", "list", "obj"])
def test_json_top_k_other_than_integer_or_digits_is_422(gateway: Gateway, value: object) -> None:
    _assert_invalid_top_k(post(gateway, CLASSIFY, json=_json_body(value)))


def test_plain_decimal_top_k_is_read_the_same_in_every_body(gateway: Gateway) -> None:
    assert _top_k_of(post(gateway, CLASSIFY, json=_json_body(2))) == 2
    assert _top_k_of(post(gateway, CLASSIFY, json=_json_body("2"))) == 2
    assert _top_k_of(post(gateway, CLASSIFY, json=_json_body("004"))) == 4
    raw_headers = {**gateway.classifier(), "Content-Type": "image/png"}
    raw = post(gateway, CLASSIFY, params={"top_k": "2"}, content=BLANK_PNG, headers=raw_headers)
    assert _top_k_of(raw) == 2
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    assert _top_k_of(post(gateway, CLASSIFY, files=files, data={"top_k": "2"})) == 2


def test_top_k_as_a_multipart_file_part_is_422(gateway: Gateway) -> None:
    files = [
        ("file", ("a.png", BLANK_PNG, "image/png")),
        ("top_k", ("k.txt", b"2", "text/plain")),
    ]
    _assert_invalid_top_k(post(gateway, CLASSIFY, files=files))


@pytest.mark.parametrize("name", ["metadata.json%0A", "metadata.json%0D%0A", "plot.png%0A"])
def test_report_name_with_a_trailing_newline_is_invalid(gateway: Gateway, name: str) -> None:
    url = f"{gateway.url}/v1/models/photos/versions/1/report/{name}"
    response = httpx.get(url, headers=gateway.classifier(), timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_report_file"


def test_ui_file_with_a_trailing_newline_is_not_found(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/ui/index.html%0A", timeout=10)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
