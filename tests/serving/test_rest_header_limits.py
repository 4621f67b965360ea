"""REST request headers are bounded in size and time (``--rest_api_max_header_bytes``,
``--rest_api_header_timeout_in_ms``; fdl-model-server only). Before, with httptools a header of
any size was read (200 MB was accepted while the server's memory grew), and with either parser a
connection that sent part of its headers, or nothing, stayed open for ever. Over real HTTP on raw
sockets, with both of the server's HTTP parsers (httptools; h11 with CORS support on)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from harness.procs import wait_for
from harness.tfs import images
from serving.flags import parse_flags

MAX_HEADER_BYTES = 8192
TIMEOUT_MS = 1000
PREDICT = "/v1/models/tiny:predict"


@pytest.fixture(scope="module", params=[False, True], ids=["httptools", "h11"])
def limited(request, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("header-limits")
    model_stock.install("a", root / "tiny", 1)
    flags = [
        "--model_name=tiny",
        f"--model_base_path={root / 'tiny'}",
        f"--rest_api_max_header_bytes={MAX_HEADER_BYTES}",
        f"--rest_api_header_timeout_in_ms={TIMEOUT_MS}",
        f"--rest_api_enable_cors_support={request.param}",
    ]
    return server_factory("fdl", "header-limits", flags)


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything until the server closes, or ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not (chunk := sock.recv(65536)):
                return data + b"<closed>"
            data += chunk
    except ConnectionResetError:
        return data + b"<closed>"
    except TimeoutError:
        pass
    return data


def _refusal(response: bytes) -> tuple[int, dict]:
    """(status, JSON body) of an answer after which the server closed the connection."""
    assert response.endswith(b"<closed>"), f"the connection stayed open: {response[:300]!r}"
    head, _, body = response.removesuffix(b"<closed>").partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _logged(server, text: str) -> bool:
    return text in server.process.log_tail(100_000)


def test_oversized_headers_get_431(limited) -> None:
    """1 MB of headers (more than one read, so h11 sees them incomplete too): 431 with TF
    Serving's JSON error form, and the connection closed."""
    request = b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000
    answer: list[bytes] = []
    with _connect(limited) as sock:
        reader = threading.Thread(target=lambda: answer.append(_read_all(sock, 20)))
        reader.start()
        with contextlib.suppress(OSError):  # the server closes after answering
            sock.sendall(request + b"\r\n\r\n")
        reader.join()
    status, reply = _refusal(answer[0])
    assert status == 431
    assert reply == {
        "error": f"Request line and headers are larger than the {MAX_HEADER_BYTES} bytes this "
        "server accepts (--rest_api_max_header_bytes)"
    }
    wait_for(lambda: _logged(limited, "(431)"), 10, "the 431 in the log")


@pytest.mark.parametrize("partial", [b"", b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n"])
def test_headers_that_do_not_arrive_in_time_get_408(limited, partial: bytes) -> None:
    """Nothing, or part of the headers, then nothing: 408 once the header time is up, and the
    connection closed."""
    with _connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(partial)
        response = _read_all(sock, TIMEOUT_MS / 1000 + 10)
        elapsed = time.monotonic() - started
    status, reply = _refusal(response)
    assert status == 408
    wanted = f"Request headers did not arrive within {TIMEOUT_MS} ms "
    assert reply == {"error": wanted + "(--rest_api_header_timeout_in_ms)"}
    assert elapsed > TIMEOUT_MS / 1000 - 0.1, elapsed
    wait_for(lambda: _logged(limited, "(408)"), 10, "the 408 in the log")


def test_unparsable_requests_get_a_json_400(limited) -> None:
    with _connect(limited) as sock:
        sock.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHo st: x\r\n\r\n")
        status, reply = _refusal(_read_all(sock, 10))
    assert status == 400
    assert reply["error"].startswith("Malformed HTTP request")


def _predict(sock: socket.socket, body: bytes) -> dict:
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 200"), data[:300]
    length = next(
        int(line.split(b":", 1)[1])
        for line in head_bytes.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the keep-alive connection"
        rest += chunk
    return json.loads(rest)


def test_keep_alive_connections_outlive_the_header_timeout(limited) -> None:
    """The header time runs from a request's first byte: a keep-alive connection idle for longer
    between two calls (the idle time is --rest_api_timeout_in_ms, 30 s) serves the next one,
    and headers within the limit are served."""
    body = json.dumps({"instances": images(1).tolist()}).encode()
    with _connect(limited) as sock:
        assert len(_predict(sock, body)["predictions"]) == 1
        # Idle on purpose, past the header timeout: what is tested is a time.
        time.sleep(TIMEOUT_MS / 1000 * 1.5)
        assert len(_predict(sock, body)["predictions"]) == 1
        sock.sendall(
            b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nX-Pad: "
            + b"a" * (MAX_HEADER_BYTES // 2)
            + b"\r\n\r\n"
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_header_limit_flags() -> None:
    """Defaults: 64 KiB and 10 s; 0 turns a limit off."""
    args = parse_flags(["--model_base_path=/m"])
    assert args.rest_api_max_header_bytes == 64 * 1024
    assert args.rest_api_header_timeout_in_ms == 10_000
    args = parse_flags(["--model_base_path=/m", "--rest_api_header_timeout_in_ms=0"])
    assert args.rest_api_header_timeout_in_ms == 0
