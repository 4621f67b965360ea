"""A request without a ``Host`` header (HTTP/1.0 only: fdl/http_guard.py refuses an HTTP/1.1 one)
names no host of FDL_ALLOWED_HOSTS: where the list is set it gets 400 ``host_not_allowed``, as a
listed name is required of every other request (Starlette's TrustedHostMiddleware decides the
same), on the gateway's port and on the probe port (FDL_PROBE_PORT) alike. Before, it passed the
check. ``/healthz`` and ``/readyz`` answer with or without a ``Host`` (the kubelet's probes, by
address, send ``Host: <ip>:<port>``), and FDL_ALLOWED_HOSTS unset (``*``) serves it as before.

Real gateways over the shared model server and Redis, spoken to over raw sockets.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from harness.gateway import Gateway
from harness.procs import free_port, wait_http
from tests.api.test_http_limits import _read_all, _status

LISTED = "localhost,127.0.0.1"
# Paths that need a listed name on the gateway's port: keyed, open, the UI and the docs.
CHECKED = ("/v1/models", "/v1/jobs", "/openapi.json", "/ui/", "/docs", "/metrics")
PROBES = ("/healthz", "/readyz")


def _ask(port: int, request: bytes) -> bytes:
    """The whole answer to ``request`` (HTTP/1.0: the connection is closed after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _refused(response: bytes) -> dict[str, str]:
    """The JSON error of a 400 the gateway's middleware answered, with its security header."""
    assert _status(response) == 400, response[:300]
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"\r\nx-content-type-options: nosniff" in head.lower(), head
    return dict(json.loads(body)["error"])


@pytest.fixture(scope="module")
def listed(more_gateways: Callable[..., Gateway]) -> tuple[Gateway, str]:
    """A gateway with FDL_ALLOWED_HOSTS set and a probe port, and the probe port's URL."""
    probe_port = free_port()
    gateway = more_gateways(
        "gateway-no-host", FDL_ALLOWED_HOSTS=LISTED, FDL_PROBE_PORT=str(probe_port)
    )
    probe = f"http://127.0.0.1:{probe_port}"
    wait_http(f"{probe}/healthz", "the probe listener", gateway.process)
    return gateway, probe


@pytest.mark.parametrize("path", CHECKED)
def test_no_host_is_refused_where_hosts_are_listed(listed: tuple[Gateway, str], path: str) -> None:
    gateway, _ = listed
    error = _refused(_ask(_port(gateway.url), f"GET {path} HTTP/1.0\r\n\r\n".encode()))
    assert error["code"] == "host_not_allowed", error
    assert "no Host header" in error["message"] and "FDL_ALLOWED_HOSTS" in error["message"]


def test_a_classification_without_host_is_refused_before_its_body(
    listed: tuple[Gateway, str],
) -> None:
    gateway, _ = listed
    body = b"x" * 100
    request = (
        b"POST /v1/models/digits:classify HTTP/1.0\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )  # fmt: skip
    assert _refused(_ask(_port(gateway.url), request))["code"] == "host_not_allowed"


def test_the_probe_ports_metrics_refuse_no_host_as_the_main_port(
    listed: tuple[Gateway, str],
) -> None:
    _, probe = listed
    error = _refused(_ask(_port(probe), b"GET /metrics HTTP/1.0\r\n\r\n"))
    assert error["code"] == "host_not_allowed", error
    # A listed name is scraped as before.
    named = _ask(_port(probe), b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    assert _status(named) == 200, named[:300]


@pytest.mark.parametrize("port_of", ["gateway", "probe"])
def test_probes_are_answered_with_or_without_host(
    listed: tuple[Gateway, str], port_of: str
) -> None:
    gateway, probe = listed
    port = _port(gateway.url if port_of == "gateway" else probe)
    for path in PROBES:
        for head in (
            f"GET {path} HTTP/1.0\r\n\r\n",
            # The kubelet's, by the pod's address.
            f"GET {path} HTTP/1.1\r\nHost: 10.1.2.3:{port}\r\nUser-Agent: kube-probe/1.30\r\n"
            "Connection: close\r\n\r\n",
        ):
            answer = _ask(port, head.encode())
            assert _status(answer) in (200, 503), (path, head, answer[:300])


def test_any_host_still_serves_http10_without_host(gateway: Gateway) -> None:
    """FDL_ALLOWED_HOSTS unset (``*``): no name is required, none is."""
    answer = _ask(_port(gateway.url), b"GET /v1/models HTTP/1.0\r\n\r\n")
    assert _status(answer) == 401, answer[:300]  # the shared gateway's models are keyed
