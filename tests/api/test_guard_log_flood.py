"""Requests anyone can send to make the gateway log (malformed HTTP, timeouts, the connection
cap) are logged once per reason per interval, each once, while the metric counts them all."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from api.logs import OncePerInterval
from harness.gateway import Gateway, log_lines
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
