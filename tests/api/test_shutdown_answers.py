"""A request cut short by the gateway's shutdown (SIGTERM) is answered 503 ``shutting_down``,
JSON with ``Retry-After: 1`` and ``Connection: close``, never uvicorn's text/plain 500
(api/shutdown.py).

Real gateways, each with a short FDL_SHUTDOWN_GRACE_S. An upload whose body is still arriving is
answered as soon as the shutdown begins; a promotion waiting for the repository's lock (another
writer holds it) when the grace runs out, then, and nothing is written; a promotion in the middle
of its change (its config reload held by a gRPC proxy in front of a real model server) when the
grace runs out, once its change is undone. Before, each got ``500 Internal Server Error`` in
text/plain once the grace (10 s) had run out.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import grpc
import httpx
from filelock import FileLock

from fdl.repository import CONFIG_FILE, LOCK_FILE
from fdl.repository_files import has_record
from fdl.repository_reads import LABELS_FILE, read_labels
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, Gateway, start_gateway
from harness.model_server import model_server_running
from harness.repository import SERVED, copy_repository
from tests.chaos.grpc_tap import RELOAD, Tap

GRACE_S = 5.0
LabelsFile = dict[str, dict[str, int]]


def _address(gateway: Gateway) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _open_request(gateway: Gateway, head: str, body: bytes) -> socket.socket:
    """A connection that has sent ``head`` (a request line and headers) and ``body``, once the
    gateway has read them: a request on a second connection is answered after, in the same event
    loop."""
    sock = socket.create_connection(_address(gateway), timeout=30)
    sock.sendall(head.encode() + body)
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and body of the one answer on ``sock``, read to
    its end (the gateway closes the connection after it)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    assert data, "the connection closed with no answer"
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _assert_shutting_down(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 503, (status, headers, body)
    assert headers["content-type"] == "application/json", headers
    assert headers["retry-after"] == "1", headers
    assert headers["connection"] == "close", headers
    assert json.loads(body)["error"]["code"] == "shutting_down", body


def _promote(gateway: Gateway, model: str, label: str, version: int) -> socket.socket:
    body = json.dumps({"version": version}).encode()
    head = (
        f"POST /v1/models/{model}/labels/{label} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return _open_request(gateway, head, body)


def _no_traceback(gateway: Gateway) -> None:
    log = gateway.process.log_path.read_text(errors="replace")
    assert "Exception in ASGI application" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_an_upload_still_arriving_is_answered_503_when_the_shutdown_begins(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str
) -> None:
    with lone_gateway(
        "gateway-shutdown-upload", redis_url, FDL_SHUTDOWN_GRACE_S=str(GRACE_S)
    ) as gateway:
        head = (
            "POST /v1/models/digits:classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {CLASSIFY_KEY}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(BLANK_PNG)}\r\n\r\n"
        )
        sock = _open_request(gateway, head, BLANK_PNG[:10])  # the rest never comes
        gateway.process.signal(signal.SIGTERM)
        stopped = time.monotonic()
        status, headers, body = _answer(sock)
        answered_s = time.monotonic() - stopped
        _assert_shutting_down(status, headers, body)
        # At once, not once the grace has run out.
        assert answered_s < GRACE_S, answered_s
        assert gateway.process.popen.wait(timeout=30) == -signal.SIGTERM
        _no_traceback(gateway)
        access = [
            json.loads(line)
            for line in gateway.process.log_path.read_text().splitlines()
            if '"path": "/v1/models/digits:classify"' in line
        ]
        assert [line["status"] for line in access] == [503], access


def test_a_promotion_waiting_for_the_lock_is_answered_503_when_the_grace_runs_out(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"  # the lone gateway's repository
    models.mkdir()
    labels = models / "labels.json"
    labels.write_text(json.dumps({"digits": {"stable": 1}}))
    before = labels.read_bytes()
    grace_s = 2.0
    with lone_gateway(
        "gateway-shutdown-promotion",
        redis_url,
        FDL_SHUTDOWN_GRACE_S=str(grace_s),
        FDL_PROMOTE_TIMEOUT_S="60",
    ) as gateway:
        lock = FileLock(models / LOCK_FILE)
        with lock:  # another writer (a worker's publish) holds the repository
            sock = _promote(gateway, "digits", "stable", 2)
            gateway.process.signal(signal.SIGTERM)
            stopped = time.monotonic()
            status, headers, answer = _answer(sock)
            answered_s = time.monotonic() - stopped
            _assert_shutting_down(status, headers, answer)
            assert answered_s >= grace_s, answered_s  # it had the grace to get the lock
            assert labels.read_bytes() == before
            # Its worker thread, still waiting for the lock, does not keep the process.
            assert gateway.process.popen.wait(timeout=30) == -signal.SIGTERM
        _no_traceback(gateway)
    assert labels.read_bytes() == before
    assert sorted(p.name for p in models.iterdir()) == sorted([LOCK_FILE, "labels.json"])


class HeldReload(Tap):
    """A gRPC proxy in front of a model server that holds the first config reload sent through
    it until released: the promotion that sent it stays in the middle of its change."""

    def __init__(self, upstream: str) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        super().__init__(upstream)

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> Any:
        if method == RELOAD and not self.holding.is_set():
            self.holding.set()
            self.release.wait(60)
        return super().forward(method, request, context)


def test_a_promotion_cut_in_the_middle_of_its_change_is_undone_and_answered_503(
    pristine_repository: Path, redis_url: str, logs_dir: Path, tmp_path: Path
) -> None:
    models = copy_repository(pristine_repository, tmp_path / "models")
    config_before = (models / CONFIG_FILE).read_text()
    with model_server_running("shutdown-model-server", models, logs_dir, SERVED) as server:
        tap = HeldReload(server.target)
        gateway = start_gateway(
            "gateway-shutdown-change",
            logs_dir,
            redis_url,
            tap.port,
            models,
            tmp_path / "secrets",
            FDL_SHUTDOWN_GRACE_S="2",
            FDL_REPLICA_SYNC_S="0",
        )
        try:
            sock = _promote(gateway, "promo", "canary", 3)  # loaded: one reload, the final one
            assert tap.holding.wait(60), gateway.process.log_tail()
            assert read_labels(models)["promo"] == {"canary": 3}  # written, not yet kept
            gateway.process.signal(signal.SIGTERM)
            _assert_shutting_down(*_answer(sock))
            assert tap.calls[RELOAD] == 1  # the undo's (the held one has not gone through)
            assert gateway.process.popen.wait(timeout=30) == -signal.SIGTERM
            _no_traceback(gateway)
        finally:
            tap.release.set()
            gateway.close()
            tap.close()
    assert "promo" not in read_labels(models)
    assert (models / CONFIG_FILE).read_text() == config_before
    assert not has_record(models, LABELS_FILE) and not has_record(models, CONFIG_FILE)
