"""Every REST request body is bounded in size and time (``--rest_api_max_body_bytes``,
``--rest_api_body_timeout_in_ms``; fdl-model-server only: TF Serving reads any body whole,
however large or slow). Before, a client could declare or stream gigabytes, or hold a
connection forever with a body that never ends. Over real HTTP, on raw sockets and with real
clients, with both of the server's HTTP parsers (httptools; h11 with CORS support on)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest
import requests

from harness.tfs import images
from serving.flags import parse_flags

LIMIT = 2000
TIMEOUT_MS = 1500
PREDICT = "/v1/models/tiny:predict"


@pytest.fixture(scope="module", params=[False, True], ids=["httptools", "h11"])
def limited(request, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("body-limits")
    model_stock.install("a", root / "tiny", 1)
    flags = [
        "--model_name=tiny",
        f"--model_base_path={root / 'tiny'}",
        f"--rest_api_max_body_bytes={LIMIT}",
        f"--rest_api_body_timeout_in_ms={TIMEOUT_MS}",
        f"--rest_api_enable_cors_support={request.param}",
    ]
    return server_factory("fdl", "body-limits", flags)


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=30)


def _head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers, "", ""]
    return "\r\n".join(lines).encode()


def _answer(sock: socket.socket) -> tuple[int, dict, bytes, bool]:
    """(status, JSON body, raw head, whether the server then closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the answer"
        body += chunk
    sock.settimeout(2)  # a closing server closes at once; a kept connection stays quiet
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        closed = False
    sock.settimeout(30)
    return int(head.split(b" ")[1]), json.loads(body[:length]), head, closed


def _predict_body() -> bytes:
    body = json.dumps({"instances": images(1).tolist()}).encode()
    assert len(body) < LIMIT
    return body


def test_declared_length_over_the_limit_is_413_before_the_body(limited) -> None:
    """A Content-Length over the limit is answered at once, before any byte of the body, when
    it is more than the server reads of a refused body, or when the client waits for ``100
    Continue`` (it is never invited to send it); and the connection is closed. Before, the
    server waited for all of it."""
    cases = [(10**10, "POST", "Expect: 100-continue"), (10**10, "POST", ""), (10**10, "GET", "")]
    for length, method, extra in [*cases, (5000, "POST", "Expect: 100-continue")]:
        with _connect(limited) as sock:
            headers = [f"Content-Length: {length}", *([extra] if extra else [])]
            sock.sendall(_head(method, PREDICT, *headers))
            status, reply, head, closed = _answer(sock)
        assert status == 413 and closed, (length, method, extra)
        assert b"100 Continue" not in head
        assert reply == {
            "error": f"Request body of {length} bytes is larger than the {LIMIT} bytes this "
            "server accepts (--rest_api_max_body_bytes)"
        }


def test_chunked_body_over_the_limit_is_413(limited) -> None:
    """A chunked body declares no length: it is refused once the bytes received pass the limit,
    and the rest is read and dropped until its end; this one never ends, so the answer comes
    when the body's time is up."""
    with _connect(limited) as sock:
        sock.sendall(_head("POST", PREDICT, "Transfer-Encoding: chunked"))
        for _ in range(3):  # 3 x 900 bytes, and no final chunk
            sock.sendall(b"384\r\n" + b" " * 900 + b"\r\n")
        status, reply, _, closed = _answer(sock)
    assert status == 413 and closed
    assert reply == {
        "error": f"Request body is larger than the {LIMIT} bytes this server accepts "
        "(--rest_api_max_body_bytes)"
    }


def test_bodies_within_the_limit_are_served(limited) -> None:
    """At the limit, declared or chunked, a call is served and the connection kept."""
    body = _predict_body()
    padded = body + b" " * (LIMIT - len(body))  # JSON whitespace up to the limit exactly
    with _connect(limited) as sock:
        sock.sendall(_head("POST", PREDICT, f"Content-Length: {len(padded)}") + padded)
        status, reply, _, closed = _answer(sock)
        assert status == 200 and len(reply["predictions"]) == 1 and not closed
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        sock.sendall(_head("POST", PREDICT, "Transfer-Encoding: chunked") + chunked)
        status, reply, _, closed = _answer(sock)
        assert status == 200 and len(reply["predictions"]) == 1 and not closed


def test_a_body_that_does_not_arrive_in_time_is_408(limited) -> None:
    """Part of a body, then nothing: 408 once the body's time is up, and the connection is
    closed. Before, the connection (and the request) stayed open for as long as the client
    kept it."""
    with _connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(_head("POST", PREDICT, "Content-Length: 100") + b'{"instances": ')
        status, reply, _, closed = _answer(sock)
        elapsed = time.monotonic() - started
    assert status == 408 and closed
    wanted = f"Request body did not arrive within {TIMEOUT_MS} ms (--rest_api_body_timeout_in_ms)"
    assert reply == {"error": wanted}
    assert TIMEOUT_MS / 1000 - 0.1 < elapsed < TIMEOUT_MS / 1000 + 10


def test_body_limit_flags() -> None:
    """Defaults: 256 MiB and 60 s; 0 turns a limit off."""
    args = parse_flags(["--model_base_path=/m"])
    assert args.rest_api_max_body_bytes == 256 * 1024 * 1024
    assert args.rest_api_body_timeout_in_ms == 60_000
    args = parse_flags(["--model_base_path=/m", "--rest_api_max_body_bytes=0"])
    assert args.rest_api_max_body_bytes == 0


BIG = 5_000_000  # far over the limit, and within what the server reads of a refused body


def _pieces(body: bytes) -> Iterator[bytes]:
    return (body[i : i + 65536] for i in range(0, len(body), 65536))


def _http_client(port: int, body: bytes, chunked: bool) -> tuple[int, dict, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = _pieces(body) if chunked else body
        conn.request(
            "POST", PREDICT, data, {"Content-Type": "application/json"}, encode_chunked=chunked
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Connection")
    finally:
        conn.close()


def _requests(port: int, body: bytes, chunked: bool) -> tuple[int, dict, str | None]:
    data = _pieces(body) if chunked else body  # a generator is sent chunked
    response = requests.post(f"http://127.0.0.1:{port}{PREDICT}", data=data, timeout=60)
    return response.status_code, response.json(), response.headers.get("Connection")


def _aiohttp(port: int, body: bytes, chunked: bool) -> tuple[int, dict, str | None]:
    async def chunks() -> object:
        for piece in _pieces(body):
            yield piece

    async def post() -> tuple[int, dict, str | None]:
        async with aiohttp.ClientSession() as session:
            data = chunks() if chunked else body
            async with session.post(f"http://127.0.0.1:{port}{PREDICT}", data=data) as response:
                reply = await response.json(content_type=None)
                return response.status, reply, response.headers.get("Connection")

    return asyncio.run(post())


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
@pytest.mark.parametrize("client", [_http_client, _requests, _aiohttp], ids=lambda c: c.__name__)
def test_clients_get_the_413_of_a_body_they_are_still_sending(limited, client, chunked) -> None:
    """The server reads and drops the rest of a refused body before it answers and closes.
    Before, it closed while the client was still sending, the kernel reset the connection, and
    these clients raised ConnectionResetError or BrokenPipeError instead of showing the 413."""
    status, reply, connection = client(limited.rest_port, b" " * BIG, chunked)
    size = "" if chunked else f" of {BIG} bytes"
    assert (status, connection) == (413, "close")
    assert reply == {
        "error": f"Request body{size} is larger than the {LIMIT} bytes this server accepts "
        "(--rest_api_max_body_bytes)"
    }
