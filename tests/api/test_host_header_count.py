"""RFC 9112 §3.2: a request with more than one Host header, or an HTTP/1.1 request with none, is
answered 400 (``malformed_request``, JSON, nosniff, the connection closed) by the HTTP layer
(fdl/http_guard.py), before the app: by the gateway, whatever FDL_ALLOWED_HOSTS (before, the last
Host was the one checked against it, and a proxy reading the first would route by another name),
and by the model server's REST front end (with httptools; h11, with CORS support on, refused them
already, now saying why). HTTP/1.0 needs no Host (where FDL_ALLOWED_HOSTS is set, its keyed
paths then name no listed host: 400 ``host_not_allowed``, from the app). The probes' ordinary
requests (kubelet, `fdl.healthcheck`, the model server's compose healthcheck) are answered as
before.

Real gateways and model servers, spoken to over raw sockets.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.gateway import Gateway, log_lines
from harness.model_server import ModelServer, start_model_server
from harness.procs import wait_for
from tests.api.test_http_limits import _read_all, _status

LISTED = "localhost,127.0.0.1"
# (request head after the request line, what is wrong with it), every one refused with 400.
REFUSED = {
    "two-same": (b"Host: localhost\r\nHost: localhost\r\n", "more than one Host header"),
    "two-other-case": (b"host: localhost\r\nHost: localhost\r\n", "more than one Host header"),
    # The listed name last: it was the one checked, the other one passed.
    "unlisted-first": (b"Host: attacker.example\r\nhost: localhost\r\n", "more than one Host"),
    "unlisted-last": (b"HOST: localhost\r\nHost: attacker.example\r\n", "more than one Host"),
    "three": (b"Host: a\r\nX-A: 1\r\nHost: a\r\nhOsT: a\r\n", "more than one Host header"),
    "none": (b"X-A: 1\r\n", "no Host header"),
}
# The gateway's paths: open, keyed (never reached: not 401), exempt from FDL_ALLOWED_HOSTS.
GATEWAY_PATHS = ("/healthz", "/readyz", "/v1/models", "/v1/models/digits:classify")


def _ask(port: int, request: bytes) -> bytes:
    """The whole answer to ``request``: the connection is closed after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


def _refusal(response: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """The headers and body of a 400 closing the connection, with the security headers."""
    assert _status(response) == 400, response[:300]
    head, _, body = response.partition(b"\r\n\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    assert headers[b"content-type"] == b"application/json", head
    assert headers[b"x-content-type-options"] == b"nosniff", head
    assert headers[b"connection"] == b"close", head
    assert int(headers[b"content-length"]) == len(body), response
    return headers, body


@pytest.fixture(scope="module")
def listed(more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways("gateway-host-count", FDL_ALLOWED_HOSTS=LISTED)


@pytest.fixture(scope="module", params=["any-host", "listed-hosts"])
def either(request: pytest.FixtureRequest, gateway: Gateway, listed: Gateway) -> Gateway:
    """FDL_ALLOWED_HOSTS unset (``*``: the shared gateway) and set."""
    return gateway if request.param == "any-host" else listed


@pytest.mark.parametrize(
    ("version", "case"),
    # HTTP/1.0 needs no Host: test_http10_without_host_is_answered
    [("1.1", case) for case in REFUSED] + [("1.0", case) for case in REFUSED if case != "none"],
)
def test_gateway_refuses_host_count(either: Gateway, version: str, case: str) -> None:
    head, problem = REFUSED[case]
    for path in GATEWAY_PATHS:
        method = b"POST" if path.endswith(":classify") else b"GET"
        body = b"x" * 10 if method == b"POST" else b""
        request = (
            method + b" " + path.encode() + f" HTTP/{version}\r\n".encode() + head
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )  # fmt: skip
        _, answer = _refusal(_ask(_port(either), request))
        error = json.loads(answer)["error"]
        assert error["code"] == "malformed_request", (path, error)
        assert problem in error["message"], (path, error)


def test_a_refused_request_never_reaches_the_app(listed: Gateway) -> None:
    """No access line (the middleware's) for it, while the next request's is written."""
    refused, answered = uuid.uuid4().hex, uuid.uuid4().hex
    head = f"Host: attacker.example\r\nHost: localhost\r\nX-Request-ID: {refused}\r\n\r\n"
    _refusal(_ask(_port(listed), b"GET /v1/models HTTP/1.1\r\n" + head.encode()))
    # A keyed route's answer (401 without the key) is logged; /healthz's is not.
    ok = f"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: {answered}\r\n"
    assert _status(_ask(_port(listed), ok.encode() + b"Connection: close\r\n\r\n")) == 401

    def logged() -> set[str | None]:
        return {line.get("request_id") for line in log_lines(listed.process)}

    wait_for(lambda: answered in logged(), 10, "the answered request's access line")
    assert refused not in logged()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/models"])
def test_http10_without_host_is_answered(either: Gateway, listed: Gateway, path: str) -> None:
    """By the app, not the HTTP layer: the probes answer; a keyed path is 401 without the key
    where any host is served, and 400 ``host_not_allowed`` where FDL_ALLOWED_HOSTS is set (no
    Host names no listed one: tests/api/test_host_header_absent.py)."""
    response = _ask(_port(either), f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 "), response[:300]
    if path != "/v1/models":
        assert _status(response) in (200, 503), response[:300]
    elif either is listed:
        assert _status(response) == 400, response[:300]
        body = response.partition(b"\r\n\r\n")[2]
        assert json.loads(body)["error"]["code"] == "host_not_allowed", response[:300]
    else:
        assert _status(response) == 401, response[:300]


def test_probes_with_one_host_are_answered(either: Gateway) -> None:
    """The kubelet's request as it sends it (the pod's address, not a listed name), and
    `fdl.healthcheck` (the compose healthcheck)."""
    kubelet = (
        b"GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:8081\r\nUser-Agent: kube-probe/1.30\r\n"
        b"Accept: */*\r\nConnection: close\r\n\r\n"
    )
    assert _status(_ask(_port(either), kubelet)) == 200
    ready = kubelet.replace(b"/healthz", b"/readyz")
    assert _status(_ask(_port(either), ready)) in (200, 503)
    check = [sys.executable, "-m", "fdl.healthcheck", f"{either.url}/healthz"]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def cors_server(logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A model server with CORS support on (uvicorn's h11 parser), serving no model."""
    root = tmp_path_factory.mktemp("cors-models")
    (root / "models.config").write_text("model_config_list {}\n")
    server = start_model_server(
        "model-server-host-count-h11", root, logs_dir, flags=["--rest_api_enable_cors_support=true"]
    )
    try:
        wait_for(lambda: _rest_up(server), 120, "the REST port", check=server.process.ensure_alive)
        yield server
    finally:
        server.process.stop()


def _rest_up(server: ModelServer) -> bool:
    try:
        return _status(_ask(server.rest_port, b"GET /v1/models/x HTTP/1.0\r\n\r\n")) > 0
    except OSError:
        return False


@pytest.fixture(params=["httptools", "h11"])
def rest_server(
    request: pytest.FixtureRequest, model_server: ModelServer, cors_server: ModelServer
) -> tuple[ModelServer, str]:
    return (model_server if request.param == "httptools" else cors_server), request.param


@pytest.mark.parametrize("case", REFUSED)
def test_model_server_rest_refuses_host_count(
    rest_server: tuple[ModelServer, str], case: str
) -> None:
    server, parser = rest_server
    # Before, httptools answered the app's 200/404; h11 refused them already, with a message that
    # did not say why.
    head, problem = REFUSED[case]
    for request in (
        b"GET /v1/models/digits HTTP/1.1\r\n" + head + b"\r\n",
        b"POST /v1/models/digits:predict HTTP/1.1\r\n" + head + b"Content-Length: 2\r\n\r\n{}",
    ):
        _, answer = _refusal(_ask(server.rest_port, request))
        message = json.loads(answer)["error"]
        assert message.startswith("Malformed HTTP request"), message
        assert problem in message, (parser, message)


def test_model_server_rest_answers_one_host_and_http10(model_server: ModelServer) -> None:
    """As the model server's compose healthcheck asks (HTTP/1.0 with a Host), and without one."""
    for head in (b"HTTP/1.0\r\nHost: localhost\r\n", b"HTTP/1.0\r\n", b"HTTP/1.1\r\nHost: x\r\n"):
        request = b"GET /v1/models/digits " + head + b"Connection: close\r\n\r\n"
        assert _status(_ask(model_server.rest_port, request)) == 200
