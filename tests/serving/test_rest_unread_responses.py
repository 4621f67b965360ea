"""Clients that do not read their REST answers (fdl-model-server only).

Before, a request's body stayed in ``--rest_api_max_body_bytes_in_flight`` until its answer was
written, and a write waits for its client: a client that pipelined two ``:predict`` calls and
never read held the second body's part of the budget for as long as its connection stayed open,
and every other client's body that did not fit in the rest was refused with 503. Nothing closed
such a connection (uvicorn has no write timeout). Now the body leaves the budget once the answer
is built, and a connection whose client takes nothing of its answer for the write timeout is
closed.

The budget runs against a real model server (both HTTP parsers: httptools, and h11 with CORS
support on) serving a model of 2000 classes, whose answers are MBs for bodies of a few hundred
bytes, larger than the kernel's socket buffers. The write timeout, which has no flag, runs
in-process on uvicorn with the server's protocol classes, a short timeout and an app of ours
that answers 1 MB.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from harness.procs import wait_for
from harness.prometheus import samples, scrape
from harness.tfs import METRICS_PATH
from serving.protocol.rest.guard import protocol

CLASSES = 2000
ROWS = 120  # about 5 MB of answer
READERS = 2  # clients that never read
BODY = json.dumps({"instances": [[7]] * ROWS}).encode()
BUDGET = READERS * len(BODY) + len(BODY) // 2  # the other client's body fits only if they hold none


@pytest.fixture(scope="module", params=[False, True], ids=["httptools", "h11"])
def wide_server(request, server_factory, tmp_path_factory):
    from harness.models import build_test_model

    root = tmp_path_factory.mktemp("unread")
    build_test_model(root / "wide" / "1", input_shape=(1,), num_classes=CLASSES, model_name="wide")
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    flags = [
        "--model_name=wide",
        f"--model_base_path={root / 'wide'}",
        f"--monitoring_config_file={monitoring}",
        f"--rest_api_max_body_bytes_in_flight={BUDGET}",
        f"--rest_api_enable_cors_support={request.param}",
    ]
    return server_factory("fdl", "unread", flags)


def _predict_request() -> bytes:
    head = "POST /v1/models/wide:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY


def _non_reader(port: int, request: bytes) -> socket.socket:
    """A connection that sent ``request`` and reads nothing (a small receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def _answered(server) -> float:
    text = scrape(f"{server.rest}{METRICS_PATH}")
    count = ":tensorflow:serving:request_count"
    return sum(samples(text, count, model_name="wide", status="OK"))


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP answer (status, body) from ``sock``, framed by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed before an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(fields["content-length"])
    parts = [body]
    got = len(body)
    while got < length:
        chunk = sock.recv(min(1 << 20, length - got))
        assert chunk, "closed in the middle of an answer"
        parts.append(chunk)
        got += len(chunk)
    return int(lines[0].split(" ")[1]), b"".join(parts)


def test_unread_answers_do_not_hold_the_body_budget(wide_server) -> None:
    """Two clients each pipeline two ``:predict`` calls and read nothing; once all four are
    answered (the second of each waits to be written), another client's body, which fits in
    the budget only if theirs have left it, is served. Before, it was 503 until they closed."""
    server = wide_server
    before = _answered(server)
    readers = [_non_reader(server.rest_port, _predict_request() * 2) for _ in range(READERS)]
    try:
        wait_for(
            lambda: _answered(server) >= before + 2 * READERS,
            60,
            "the non-readers' calls answered",
        )
        request = urllib.request.Request(
            f"{server.rest}/v1/models/wide:predict",
            data=BODY,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, answer = error.code, json.loads(error.read())
        assert status == 200, answer
        assert len(answer["predictions"]) == ROWS
        # The non-readers' connections were kept: each reads both of its answers now.
        for sock in readers:
            for _ in range(2):
                status, body = _read_answer(sock)
                assert status == 200 and len(json.loads(body)["predictions"]) == ROWS
    finally:
        for sock in readers:
            sock.close()


# --- the write timeout, in-process ---------------------------------------------------------------

WRITE_TIMEOUT_MS = 1000
ANSWER_BYTES = 1024 * 1024


class _LargeAnswers:
    """An ASGI app that answers every request with ``ANSWER_BYTES`` and counts the calls that
    returned (a send the client never takes returns only when the connection is gone)."""

    def __init__(self) -> None:
        self.returned = 0

    async def __call__(self, scope, receive, send) -> None:
        await receive()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % ANSWER_BYTES)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * ANSWER_BYTES})
        self.returned += 1


@pytest.fixture(params=[False, True], ids=["httptools", "h11"])
def guarded(request) -> Iterator[Callable[[], tuple[int, uvicorn.Server, _LargeAnswers]]]:
    """Start uvicorn with the REST front end's protocol (``cors``: h11) and a write timeout of
    1 s, its connections' kernel send buffers kept small (set on the listening socket, which
    also turns off their growth), so that a 1 MB answer mostly waits in the server."""
    servers: list[uvicorn.Server] = []
    threads: list[threading.Thread] = []

    def start() -> tuple[int, uvicorn.Server, _LargeAnswers]:
        http, h11_limit = protocol(request.param, 0, 0, WRITE_TIMEOUT_MS)
        app = _LargeAnswers()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        config = uvicorn.Config(
            app,
            lifespan="off",
            http=http,
            h11_max_incomplete_event_size=h11_limit,
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
        thread.start()
        servers.append(server)
        threads.append(thread)
        wait_for(lambda: server.started, 30, "uvicorn started")
        return sock.getsockname()[1], server, app

    yield start
    for server in servers:
        server.should_exit = True
    for thread in threads:
        thread.join(30)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_an_unread_answer_closes_its_connection(guarded, caplog) -> None:
    """Two pipelined requests whose 1 MB answers the client never reads: the connection is
    closed after the write timeout, and the second call's pending send returns. Before, both
    stayed (and the answers in memory) for as long as the client kept the connection."""
    port, server, app = guarded()
    with _non_reader(port, GET * 2):
        start = time.monotonic()
        wait_for(lambda: app.returned == 1, 30, "the first answer written")
        assert len(server.server_state.connections) == 1
        wait_for(lambda: not server.server_state.connections, 30, "the connection closed")
        assert time.monotonic() - start >= WRITE_TIMEOUT_MS / 1000 * 0.9
        wait_for(lambda: app.returned == 2, 30, "the second call's send returned")
    assert "stayed unread" in caplog.text
    assert "Exception in ASGI" not in caplog.text


def test_an_answer_read_slowly_is_not_cut(guarded) -> None:
    """A client that takes 96 KiB of its 1 MB answer every 0.25 s needs more than twice the
    write timeout to read it all; it is never idle for one, so it gets the whole answer (the
    timeout counts from the client's last progress, not until the whole answer is sent)."""
    port, _, _ = guarded()
    with _non_reader(port, GET) as sock:
        start = time.monotonic()
        data = b""
        total = None
        while total is None or len(data) < total:
            burst = 0
            while burst < 96 * 1024 and (total is None or len(data) < total):
                chunk = sock.recv(min(65536, 96 * 1024 - burst))
                assert chunk, "the connection was closed"
                burst += len(chunk)
                data += chunk
                if total is None and b"\r\n\r\n" in data:
                    total = data.index(b"\r\n\r\n") + 4 + ANSWER_BYTES
            time.sleep(0.25)  # the client's own pace, not a wait for the server
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"x" * 1000)
    assert elapsed > 2 * WRITE_TIMEOUT_MS / 1000
