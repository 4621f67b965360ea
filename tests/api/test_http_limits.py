"""HTTP limits of a real gateway process, spoken to over raw sockets (issue 15)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from harness.bombs import transparent_png
from harness.gateway import ADMIN_KEY, Gateway, log_lines
from harness.procs import wait_for
from harness.prometheus import scrape, total

LIMITS = {
    "FDL_MAX_HEADER_BYTES": "8192",
    "FDL_HEADER_TIMEOUT_S": "1",
    "FDL_BODY_TIMEOUT_S": "1",
    "FDL_KEEPALIVE_TIMEOUT_S": "1",
    "FDL_WRITE_TIMEOUT_S": "1",
    "FDL_MAX_CONNECTIONS": "40",
    "FDL_MAX_BATCH_PIXELS": "100000",
}


@pytest.fixture(scope="module")
def limited(more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways("gateway-limits", **LIMITS)


def _connect(gateway: Gateway) -> socket.socket:
    port = int(gateway.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything until the server closes (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _logged(gateway: Gateway, reason: str) -> bool:
    return any(line.get("reason") == reason for line in log_lines(gateway.process))


def test_oversized_headers_get_431(limited: Gateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n")
        response = _read_all(sock)
    assert _status(response) == 431, response[:200]
    assert _headers(response).get(b"x-content-type-options") == b"nosniff"
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "headers_too_large"
    wait_for(lambda: _logged(limited, "headers_too_large"), 10, "the 431 in the log")
    ok = httpx.get(f"{limited.url}/healthz", headers={"X-Small": "a" * 4000}, timeout=10)
    assert ok.status_code == 200


def _headers(response: bytes) -> dict[bytes, bytes]:
    head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {
        name.strip().lower(): value.strip() for name, _, value in (h.partition(b":") for h in head)
    }


def test_a_malformed_request_gets_a_json_400_with_nosniff(limited: Gateway) -> None:
    """Answered below the app (fdl/http_guard.py), so without its middleware's headers: the
    guard's own answers carry nosniff too."""
    with _connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1 junk\r\nHost: x\r\n\r\n")
        response = _read_all(sock)
    assert _status(response) == 400, response[:200]
    headers = _headers(response)
    assert headers.get(b"x-content-type-options") == b"nosniff", response[:300]
    assert headers.get(b"content-type") == b"application/json"
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "malformed_request"


def test_pipelined_requests_each_get_the_whole_header_allowance(limited: Gateway) -> None:
    """Many small pipelined requests arriving in one read are not one oversized header."""
    requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 300  # 11.7 KB > 8 KiB limit
    with _connect(limited) as sock:
        sock.sendall(requests[:-2])  # the last one unfinished, so the server keeps the connection
        data = b""
        sock.settimeout(10)
        while data.count(b"HTTP/1.1 ") < 299 and (chunk := sock.recv(65536)):
            data += chunk
    statuses = [_status(b"HTTP/1.1 " + part) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [200] * 299, statuses[-3:]


@pytest.mark.parametrize("partial", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_slow_headers_time_out(limited: Gateway, partial: bytes) -> None:
    with _connect(limited) as sock:
        sock.sendall(partial)
        response = _read_all(sock, timeout=8)
    assert _status(response) == 408, response[:200]
    wait_for(lambda: _logged(limited, "header_timeout"), 10, "the 408 in the log")


def test_slow_body_times_out(limited: Gateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b'Content-Length: 100\r\n\r\n{"model": '
        )
        response = _read_all(sock, timeout=8)
    assert _status(response) == 408, response[:200]
    wait_for(lambda: _logged(limited, "body_timeout"), 10, "the body timeout in the log")


def test_idle_keep_alive_connections_close(limited: Gateway) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        response = _read_all(sock, timeout=8)  # the answer, then the close 1 s later
        idle = time.monotonic() - start
    assert _status(response) == 200, response[:200]
    assert idle < 3, f"the idle connection stayed open {idle:.1f} s (FDL_KEEPALIVE_TIMEOUT_S=1)"
    metrics = scrape(f"{limited.url}/metrics")
    assert total(metrics, "fdl_gateway_http_guard_total", reason="keepalive_timeout") >= 1


def test_a_client_that_never_reads_its_responses_is_disconnected(limited: Gateway) -> None:
    """Pipelined requests whose answers are never read fill the send buffers; the connection
    (and the app's pending send) must not be held forever."""
    before = total(
        scrape(f"{limited.url}/metrics"), "fdl_gateway_http_guard_total", reason="write_timeout"
    )
    port = int(limited.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", port))
        request = b"GET /docs-assets/swagger-ui-bundle.js HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            for _ in range(8):  # 1.5 MB each: far more than the kernel's buffers hold
                sock.sendall(request)
        except OSError:
            pass  # the gateway stopped reading, or cut the connection already

        def cut() -> bool:
            metrics = scrape(f"{limited.url}/metrics")
            return total(metrics, "fdl_gateway_http_guard_total", reason="write_timeout") > before

        wait_for(cut, 20, "the stalled connection to be closed (FDL_WRITE_TIMEOUT_S=1)")
        assert _logged(limited, "write_timeout")
        _read_all(sock, timeout=10)  # what was sent, then the reset: the connection is gone
    # The request being answered saw a disconnect, not a write to a closed transport.
    assert not any("Exception in ASGI" in str(line) for line in log_lines(limited.process))


def test_connections_beyond_the_cap_are_closed(limited: Gateway) -> None:
    sockets = [_connect(limited) for _ in range(60)]
    try:
        refused = [s for s in sockets if _status(_read_all(s, timeout=0.5)) == 503]
        assert len(refused) >= 15, len(refused)
        wait_for(lambda: _logged(limited, "too_many_connections"), 10, "the cap in the log")
    finally:
        for sock in sockets:
            sock.close()
    wait_for(
        lambda: httpx.get(f"{limited.url}/healthz", timeout=5).status_code == 200,
        10,
        "the gateway to serve again",
    )


def test_chunked_body_over_the_limit_gets_413(limited: Gateway) -> None:
    answer: list[bytes] = []
    with _connect(limited) as sock:
        sock.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        reader = threading.Thread(target=lambda: answer.append(_read_all(sock, timeout=30)))
        reader.start()
        chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"
        try:
            for _ in range(100):  # 100 MB
                sock.sendall(chunk)
        except OSError:
            pass  # the gateway closed after answering
        reader.join()
    assert _status(answer[0]) == 413, answer[0][:300]


def test_deeply_nested_json_gets_400(limited: Gateway) -> None:
    # 40 KB: under the JSON admin routes' 64 KiB body limit, far deeper than the recursion limit.
    nested = "[" * 20_000 + "]" * 20_000
    for path, headers in (
        ("/v1/models/digits:classify", limited.classifier()),
        ("/v1/jobs", limited.admin()),
        ("/v1/models/digits/labels/canary", limited.admin()),
    ):
        response = httpx.post(
            f"{limited.url}{path}",
            content=nested,
            headers={**headers, "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["code"], path


def test_forwarded_for_does_not_dodge_the_rate_limit(
    more_gateways: Callable[..., Gateway],
) -> None:
    running = more_gateways(
        "gateway-forwarded",
        FDL_CLASSIFY_OPEN="true",
        FDL_RATE_LIMIT_PER_MINUTE="6",
        FDL_RATE_LIMIT_BURST="3",
    )
    statuses = [
        httpx.get(
            f"{running.url}/v1/models",
            headers={
                "X-Forwarded-For": f"10.{i}.0.{i % 250}",
                "X-Request-Id": uuid.uuid4().hex,
            },
            timeout=10,
        ).status_code
        for i in range(8)
    ]
    assert 429 in statuses, statuses


def test_names_are_matched_in_full(limited: Gateway) -> None:
    job = httpx.post(
        f"{limited.url}/v1/jobs",
        json={"model": "mnist_logreg", "publish_as": "evil\n"},
        headers=limited.admin(),
        timeout=10,
    )
    assert job.status_code == 422, job.text
    assert "publish_as" in job.json()["error"]["message"]
    for path, field in (
        ("/v1/models/digits/labels/123", "label"),
        ("/v1/models/digits/labels/evil%0A", "label"),
        ("/v1/models/evil%0A/labels/stable", "model"),
    ):
        response = httpx.post(
            f"{limited.url}{path}", json={"version": 1}, headers=limited.admin(), timeout=10
        )
        assert response.status_code == 422, (path, response.text)
        assert field in response.json()["error"]["message"], (path, response.text)
    classify = httpx.post(
        f"{limited.url}/v1/models/digits/labels/7:classify",
        json={"instances": [{"b64": ""}]},
        headers=limited.classifier(),
        timeout=10,
    )
    assert classify.status_code == 422 and "label" in classify.json()["error"]["message"]


def test_batch_pixels_are_limited(limited: Gateway) -> None:
    image = transparent_png(300, 300)  # 90,000 pixels; two are over FDL_MAX_BATCH_PIXELS
    one = [("file", ("a.png", image, "image/png"))]
    url = f"{limited.url}/v1/models/digits:classify"
    assert httpx.post(url, files=one, headers=limited.classifier(), timeout=30).status_code == 200
    two = httpx.post(url, files=one * 2, headers=limited.classifier(), timeout=30)
    assert two.status_code == 413, two.text
    assert two.json()["error"]["code"] == "batch_too_large"
