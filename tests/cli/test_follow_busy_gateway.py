"""`fdl job ID --follow` against a gateway already serving all the event streams it may
(FDL_MAX_EVENT_STREAMS=1, one held open here): its 503 `too_many_streams` asks for a pause
(`Retry-After: 5`), and the CLI waits that long before asking again, where it used to ask every
second; once a stream is free it follows the job to its end. A real gateway and Redis; the
gateway's own request counter (/metrics) counts the CLI's attempts."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import httpx

from api.events import TOO_MANY_STREAMS_RETRY_AFTER_S
from fdl.cli_client import ExitCode
from fdl.cli_follow import MAX_RETRY_AFTER_S, retry_after_s
from fdl.jobs import JobStore
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway, bearer
from harness.procs import wait_for
from harness.prometheus import scrape, total

EVENTS_ROUTE = "/v1/jobs/{job_id}/events"


def hold_stream(gateway: Gateway, job_id: str) -> tuple[socket.socket, str]:
    """A job's event stream opened on a raw socket and left open; its status line."""
    address = urlsplit(gateway.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=15)
    sock.sendall(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head.split(b"\r\n", 1)[0].decode(errors="replace")


def refused(gateway: Gateway) -> float:
    """How many event stream requests the gateway has answered with 503."""
    text = scrape(f"{gateway.url}/metrics")
    return total(text, "fdl_gateway_requests_total", route=EVENTS_ROUTE, status="503")


def test_follow_waits_as_long_as_too_many_streams_asks(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str
) -> None:
    assert TOO_MANY_STREAMS_RETRY_AFTER_S >= 3  # long enough to tell from the 1 s back-off
    with lone_gateway("gateway-one-stream", redis_url, FDL_MAX_EVENT_STREAMS="1") as gateway:
        store = JobStore.from_url(redis_url)
        job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]  # queued, no worker
        held, status_line = hold_stream(gateway, job_id)
        try:
            assert " 200 " in status_line, status_line
            before = refused(gateway)
            env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
            env |= {"FDL_URL": gateway.url, "FDL_API_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
            cli = BackgroundCli(["job", job_id, "--follow"], env)
            try:
                # Printed after the first 503, before the pause; on one line in a pipe (not
                # wrapped at 80 columns: docs/ui.md).
                line = cli.wait_line("reconnecting")
                first = time.monotonic()
                assert "(503 too_many_streams); reconnecting for up to" in line, cli.output()
                assert line.rstrip().endswith("(the job goes on meanwhile)"), cli.output()
                wait_for(
                    lambda: refused(gateway) >= before + 2,
                    TOO_MANY_STREAMS_RETRY_AFTER_S + 30,
                    "the CLI's second attempt",
                )
                waited = time.monotonic() - first
                assert waited >= TOO_MANY_STREAMS_RETRY_AFTER_S - 1, waited
                held.close()  # a slot frees: the next attempt is served
                cli.wait_line("Reconnected.", timeout=TOO_MANY_STREAMS_RETRY_AFTER_S + 30)
                cancelled = httpx.delete(
                    f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10
                )
                assert cancelled.status_code == 200, cancelled.text
                assert cli.popen.wait(60) == ExitCode.JOB_FAILED, cli.output()
                assert "cancelled" in cli.output() and "Traceback" not in cli.output()
            finally:
                cli.stop()
        finally:
            held.close()


def test_retry_after_is_read_in_seconds_and_bounded() -> None:
    def asked(*value: str) -> float | None:
        headers = {"Retry-After": value[0].encode()} if value else {}
        return retry_after_s(httpx.Response(503, headers=headers))

    assert asked("5") == 5.0 and asked(" 12 ") == 12.0 and asked("0") == 0.0
    assert asked("3600") == MAX_RETRY_AFTER_S == 30.0  # bounded
    # Absent or not a number of seconds: the usual back-off.
    for value in ((), ("Wed, 21 Oct 2015 07:28:00 GMT",), ("-1",), ("1.5",), ("",), ("²",)):
        assert asked(*value) is None, value
