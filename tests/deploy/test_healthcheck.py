"""``python -m fdl.healthcheck``: the containers' probe where no curl exists."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.procs import free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/created": 204, "/broken": 500, "/moved": 302}.get(self.path, 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdl.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("path", ["/ok", "/created", "/moved"])
def test_2xx_is_healthy(server: str, path: str) -> None:
    result = run(server + path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(("path", "code"), [("/broken", "500"), ("/missing", "404")])
def test_error_status_is_unhealthy(server: str, path: str, code: str) -> None:
    result = run(server + path)
    assert result.returncode == 1
    assert f"HTTP {code}" in result.stderr


def test_closed_port_is_unhealthy() -> None:
    result = run(f"http://127.0.0.1:{free_port()}/healthz")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


def test_silent_server_times_out() -> None:
    """A server that accepts but never answers fails within the timeout, not at Docker's."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = run(f"http://127.0.0.1:{port}/healthz", "--timeout", "1")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "timed out" in result.stderr
    assert elapsed < 15


@pytest.mark.parametrize("args", [["ftp://example/x"], ["not a url"]])
def test_bad_url_is_a_clear_error(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert "not an http(s) URL" in result.stderr


def test_bad_timeout_is_a_usage_error() -> None:
    result = run("http://127.0.0.1:1/", "--timeout", "0")
    assert result.returncode == 2
    assert "--timeout must be positive" in result.stderr
