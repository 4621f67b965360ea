"""Decompression bombs against a real gateway process: its memory stays bounded (issue 15)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import psutil
import pytest

from harness.bombs import PeakRss, bomb_load, timed_requests, transparent_png
from harness.gateway import Gateway
from harness.procs import wait_for

MB = 1024 * 1024


@pytest.fixture(scope="module")
def default_gateway(more_gateways: Callable[..., Gateway]) -> Gateway:
    """The gateway with its default limits and budgets."""
    return more_gateways("gateway-memory")


def test_bombs_keep_memory_bounded(default_gateway: Gateway) -> None:
    gateway = default_gateway
    headers = gateway.classifier()
    rss = psutil.Process(gateway.process.pid)
    # Over the default pixel limit (16 M): refused from its header, nothing decoded.
    big = httpx.post(
        f"{gateway.url}/v1/models/digits:classify",
        files={"file": ("bomb.png", transparent_png(6300, 6300), "image/png")},
        headers=headers,
        timeout=60,
    )
    assert big.status_code == 413, big.text
    assert big.json()["error"]["code"] == "image_too_large"
    bomb = transparent_png(4000, 4000)  # at the limit: decoded, 64 MB as RGBA
    digit = transparent_png(28, 28)
    stop = threading.Event()
    ordinary: list[float] = []
    with PeakRss(gateway.process.pid) as peak:
        worker = threading.Thread(
            target=lambda: ordinary.extend(timed_requests(gateway.url, digit, headers, stop))
        )
        worker.start()
        try:
            statuses = bomb_load(gateway.url, bomb, headers)
        finally:
            stop.set()
            worker.join()
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses, statuses
    assert ordinary, "ordinary requests were answered meanwhile"
    assert peak.peak <= 300 * MB, f"peak RSS {peak.peak / MB:.0f} MB"
    wait_for(
        lambda: rss.memory_info().rss < 150 * MB,
        30,
        f"RSS under 150 MB again (now {rss.memory_info().rss / MB:.0f} MB)",
        interval=0.2,
    )
