"""Requests anyone can send to make the gateway log (malformed HTTP, timeouts, the connection
cap) are logged once per reason per interval, each once, while the metric counts them all."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from api.logs import OncePerInterval
from harness.gateway import Gateway, log_lines
from harness.procs import wait_for
from harness.prometheus import scrape, total
from tests.api.test_http_limits import _connect, _read_all, _status

MALFORMED = b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
FLOOD = 20


@pytest.fixture(scope="module")
def gateway(more_gateways: Callable[..., Gateway]) -> Gateway:
    return more_gateways("gateway-log-flood")


def test_a_flood_of_malformed_requests_is_logged_once(gateway: Gateway) -> None:
    for _ in range(FLOOD):
        with _connect(gateway) as sock:
            sock.sendall(MALFORMED)
            assert _status(_read_all(sock)) == 400
    metrics = scrape(f"{gateway.url}/metrics")
    assert total(metrics, "fdl_gateway_http_guard_total", reason="malformed_request") == FLOOD
    lines = log_lines(gateway.process)
    assert not [line for line in lines if "Invalid HTTP request" in line.get("message", "")]
    assert len([line for line in lines if line.get("reason") == "malformed_request"]) == 1


def _record(reason: str | None, level: int = logging.WARNING) -> logging.LogRecord:
    record = logging.LogRecord("fdl.gateway.http", level, "", 0, "closing %s", ("c",), None)
    if reason is not None:
        record.reason = reason
    return record


def test_once_per_interval_counts_what_it_held_back() -> None:
    now = [100.0]
    limit = OncePerInterval(10.0, clock=lambda: now[0])
    assert limit.filter(_record("malformed_request"))
    assert not any(limit.filter(_record("malformed_request")) for _ in range(5))
    assert limit.filter(_record("header_timeout"))  # each reason has its own interval
    assert limit.filter(_record(None)) and limit.filter(_record("x", logging.DEBUG))
    now[0] += 10.0
    record = _record("malformed_request")
    assert limit.filter(record)
    assert record.getMessage() == "closing c (and 5 more since the previous such line, not logged)"
    assert record.not_logged == 5
    now[0] += 10.0
    again = _record("malformed_request")
    assert limit.filter(again) and again.getMessage() == "closing c"


# A path that would end the access line and start a forged one, then recolour the terminal.
FORGING_PATH = (
    "/zz%0a2030-01-01%2000:00:00,000%20WARNING%20fdl.gateway.access:%20POST%20/v1/jobs%20200"
    "%0d%1b[31mRED%1b[0m"
)


def test_the_plain_log_format_escapes_what_a_client_sends(
    more_gateways: Callable[..., Gateway],
) -> None:
    """FDL_LOG_JSON=false: the access line of a request whose path holds a newline, a carriage
    return and terminal escapes stays one line, those characters written as \\xNN."""
    gateway = more_gateways("gateway-plain-log", FDL_LOG_JSON="false")
    with _connect(gateway) as sock:
        request = f"GET {FORGING_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        assert _status(_read_all(sock)) == 404

    def access_lines() -> list[str]:
        text = gateway.process.log_path.read_text(errors="replace")
        return [line for line in text.splitlines() if "/zz" in line]

    wait_for(access_lines, 10, "the access line of the forging request")
    [access] = access_lines()
    assert "/zz\\x0a2030-01-01" in access and "\\x0d\\x1b[31mRED" in access
    lines = gateway.process.log_path.read_text(errors="replace").splitlines()
    assert not [line for line in lines if "\x1b" in line or line.startswith("2030")]
