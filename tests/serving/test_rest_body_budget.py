"""The bytes of REST bodies all requests hold at once are bounded
(``--rest_api_max_body_bytes_in_flight``, fdl-model-server only). Before, each body was bounded
alone, so N concurrent uploads held N x 256 MiB (twice that while their chunks were joined).

The REST application runs in-process on uvicorn with both of the server's HTTP parsers, on a
real socket; its budget is read to know when a request holds its part. The requests are refused
before any model is looked up, or are for a path outside the API (a JSON 404 once the body has
been read), so no model server is needed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from harness.procs import wait_for
from serving.flags import parse_flags
from serving.protocol.rest.app import RestApi
from serving.protocol.rest.body import BodyLimits

LIMIT = 2000
BUDGET = 3000
OUTSIDE = "/outside"  # not under /v1/: 404 once its body is read


@pytest.fixture(params=["httptools", "h11"])
def serve(request) -> Iterator[Callable[[BodyLimits], tuple[int, RestApi]]]:
    servers: list[uvicorn.Server] = []
    threads: list[threading.Thread] = []

    def start(limits: BodyLimits) -> tuple[int, RestApi]:
        app = RestApi(None, None, request.param == "h11", limits)  # type: ignore[arg-type]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        config = uvicorn.Config(
            app, lifespan="off", http=request.param, log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
        thread.start()
        servers.append(server)
        threads.append(thread)
        wait_for(lambda: server.started, 30, "uvicorn started")
        return sock.getsockname()[1], app

    yield start
    for server in servers:
        server.should_exit = True
    for thread in threads:
        thread.join(30)


def _post(port: int, body: bytes, chunked: bool = False) -> tuple[int, dict, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = iter([body]) if chunked else body
        conn.request("POST", OUTSIDE, data, encode_chunked=chunked)
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, json.loads(response.read()), headers
    finally:
        conn.close()


def _holding(port: int, head: str, part: bytes) -> socket.socket:
    """A request that sent its headers and part of its body, and waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {OUTSIDE} HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n".encode() + part)
    return sock


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "closed without an answer"
        data += chunk
    return int(data.split(b" ")[1])


BUSY = {
    "error": f"The server holds {BUDGET} bytes of request bodies at once "
    "(--rest_api_max_body_bytes_in_flight) and has no room for this one now; retry later"
}


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_the_budget_cannot_hold_now_is_503(serve, chunked) -> None:
    """One request holds 2000 bytes (declared, or received of a chunked body); another of 1500
    is 503 with ``Retry-After`` until the first is answered, then served."""
    port, app = serve(BodyLimits(LIMIT, 30.0, BUDGET))
    if chunked:
        first = _holding(port, "Transfer-Encoding: chunked", b"7d0\r\n" + b" " * 2000 + b"\r\n")
    else:
        first = _holding(port, "Content-Length: 2000", b" " * 10)
    with first:
        wait_for(lambda: app.body_budget.held == 2000, 30, "the first request holding 2000")
        status, reply, headers = _post(port, b" " * 1500, chunked)
        assert (status, reply) == (503, BUSY)
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        first.sendall(b"0\r\n\r\n" if chunked else b" " * 1990)
        assert _status(first) == 404
    wait_for(lambda: app.body_budget.held == 0, 30, "the budget given back")
    assert _post(port, b" " * 1500, chunked)[0] == 404


def test_a_body_larger_than_the_whole_budget_is_413(serve) -> None:
    """Without a limit of its own, a body larger than the whole budget can never be held."""
    port, _ = serve(BodyLimits(0, 30.0, BUDGET))
    wanted = "is larger than the 3000 bytes of request bodies this server holds at once "
    wanted += "(--rest_api_max_body_bytes_in_flight)"
    status, reply, _ = _post(port, b" " * 4000)
    assert (status, reply) == (413, {"error": f"Request body of 4000 bytes {wanted}"})
    status, reply, _ = _post(port, b" " * 4000, chunked=True)
    assert (status, reply) == (413, {"error": f"Request body {wanted}"})


def test_no_budget(serve) -> None:
    """0 turns the budget off; the flag's default is 1 GiB."""
    port, app = serve(BodyLimits(LIMIT, 30.0, 0))
    with _holding(port, "Content-Length: 2000", b" "):
        wait_for(lambda: app.body_budget.held == 2000, 30, "the first request holding 2000")
        assert _post(port, b" " * 2000)[0] == 404
    assert parse_flags(["--model_base_path=/m"]).rest_api_max_body_bytes_in_flight == 2**30


def test_a_declared_body_is_read_into_one_buffer(serve) -> None:
    """A body of a declared length is read into one buffer of that size: the peak is the body
    once, where chunks and their join took it twice."""
    size = 32 * 1024 * 1024
    port, _ = serve(BodyLimits(0, 60.0, 0))
    body = b" " * size
    tracemalloc.start()
    try:
        assert _post(port, body)[0] == 404
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * size, peak / size
