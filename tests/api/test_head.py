"""HEAD on the operations routes and the model listing (health checkers, ``curl -I``): the GET's
status and headers, no body, from a real gateway process."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from harness.gateway import CLASSIFY_KEY, Gateway, bearer


def split_headers(response: bytes) -> tuple[bytes, bytes]:
    """An answer's status line and headers (to the blank line), and the bytes after them."""
    end = response.index(b"\r\n\r\n") + 4
    return response[:end], response[end:]


def head_then_get(url: str, path: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """HEAD then GET of ``path``, pipelined on one plain TCP connection (httpx reads no body for
    a HEAD, so it cannot tell whether one came): the HEAD's answer up to the end of its headers,
    and every byte after them, up to the server's close after the GET."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    fields += f"Host: {parts.netloc}\r\n"
    requests = f"HEAD {path} HTTP/1.1\r\n{fields}\r\nGET {path} HTTP/1.1\r\n{fields}"
    requests += "Connection: close\r\n\r\n"
    received = b""
    deadline = time.monotonic() + 10
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(requests.encode())
        while True:
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = connection.recv(65536)  # socket.timeout past the deadline
            if not chunk:
                break
            received += chunk
    assert b"\r\n\r\n" in received, received[:200]
    return split_headers(received)


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/metrics", None, 200),
        ("/v1/models", CLASSIFY_KEY, 200),
        ("/v1/models/digits", CLASSIFY_KEY, 200),
        ("/v1/models/nothing_here", CLASSIFY_KEY, 404),
        ("/v1/models", None, 401),
    ],
)
def test_head_answers_as_get_without_a_body(
    gateway: Gateway, path: str, key: str | None, status: int
) -> None:
    headers = bearer(key) if key else {}
    head = httpx.head(f"{gateway.url}{path}", headers=headers, timeout=10)
    get = httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10)
    assert head.status_code == get.status_code == status, head.headers
    assert head.headers["content-type"] == get.headers["content-type"]
    if path in ("/healthz", "/v1/models/nothing_here"):
        assert head.headers["content-length"] == get.headers["content-length"]
    # On the wire: the pipelined GET's answer starts right where the HEAD's headers end, so no
    # body came between them; that answer is whole (its body as long as its Content-Length).
    raw_head, after = head_then_get(gateway.url, path, headers)
    assert raw_head.startswith(f"HTTP/1.1 {status} ".encode()), raw_head
    if path == "/healthz":  # announced, as for the GET, yet not sent
        assert int(header(raw_head, "content-length") or 0) > 0, raw_head
    assert after.startswith(f"HTTP/1.1 {status} ".encode()), after[:200]
    raw_get, body = split_headers(after)
    length = header(raw_get, "content-length")
    if length is not None:
        assert len(body) == int(length), raw_get


def test_head_routes_stay_out_of_the_openapi_document(gateway: Gateway) -> None:
    paths = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()["paths"]
    assert [
        method for operations in paths.values() for method in operations if method == "head"
    ] == []
    assert "get" in paths["/healthz"] and "get" in paths["/v1/models"]
