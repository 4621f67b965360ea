"""A classify body that never fully arrives, on a real gateway process: the client leaving is
counted as 499 and the gateway's own body timeout as 408, never 500 with a traceback, with the
classify fast path on and off."""

from __future__ import annotations

import socket
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from harness.gateway import CLASSIFY_KEY, Gateway
from harness.procs import wait_for
from harness.prometheus import scrape, total

REQUEST = (
    b"POST /v1/models/digits:classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Authorization: Bearer " + CLASSIFY_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\nab"
)


def _counted(gateway: Gateway, status: int) -> float:
    metrics = scrape(f"{gateway.url}/metrics")
    return total(
        metrics,
        "fdl_gateway_requests_total",
        route="/v1/models/{model}:classify",
        status=str(status),
    )


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_cut_bodies_count_as_499_or_408(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str, fast_path: str
) -> None:
    with lone_gateway(
        f"gateway-cut-{fast_path}",
        redis_url,
        FDL_BODY_TIMEOUT_S="1",
        FDL_CLASSIFY_FAST_PATH=fast_path,
    ) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(REQUEST)  # and leaves
        wait_for(lambda: _counted(gateway, 499) == 1, 10, "the client's leaving, counted")

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(REQUEST)  # and sends nothing more
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        wait_for(lambda: _counted(gateway, 408) == 1, 10, "the body timeout, counted")

        assert _counted(gateway, 500) == 0
        log = gateway.process.log_path.read_text(errors="replace")
        assert "Exception in ASGI application" not in log
        assert "ClientDisconnect" not in log
