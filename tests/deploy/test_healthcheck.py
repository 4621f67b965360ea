"""``python -m fdl.healthcheck``: the containers' probe where no curl exists."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.settings import GatewaySettings
from deploy.lint import dockerfile
from fdl.healthcheck import PortError, url_from_env
from harness.procs import REPO_ROOT, free_port


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


def run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    return subprocess.run(
        [sys.executable, "-m", "fdl.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**clean, **env},
    )


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.mark.parametrize("probe", ["00", "0", "-0", "0.0", " 0 ", ""])
def test_from_env_a_probe_port_the_settings_read_as_0_is_off(server: str, probe: str) -> None:
    env = {"FDL_PROBE_PORT": probe, "FDL_GATEWAY_PORT": _port(server)}
    result = run_env(env, "--from-env", "/ok")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("probe", ["{port}", "{port}.0", " {port} ", "+{port}", "0{port}"])
def test_from_env_a_probe_port_as_the_settings_read_it(server: str, probe: str) -> None:
    env = {"FDL_PROBE_PORT": probe.format(port=_port(server)), "FDL_GATEWAY_PORT": "1"}
    result = run_env(env, "--from-env", "ok")  # with or without the leading slash
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"FDL_PROBE_PORT": "8081.5"}, "FDL_PROBE_PORT='8081.5' is not an integer"),
        ({"FDL_PROBE_PORT": "70000"}, "FDL_PROBE_PORT='70000' is not a port (0-65535)"),
        ({"FDL_GATEWAY_PORT": "0"}, "FDL_GATEWAY_PORT='0' is not a port (1-65535)"),
    ],
)
def test_from_env_a_port_the_settings_refuse_is_unhealthy(env: dict[str, str], reason: str) -> None:
    result = run_env(env, "--from-env", "/healthz")
    assert result.returncode == 1
    assert result.stderr == f"unhealthy: {reason}\n"


@pytest.mark.parametrize(
    "value", ["00", "0", "8081", "8081.0", " 8081 ", "+8081", "8_081", "-0", "8081.5", "0x1f91"]
)
def test_from_env_reads_the_probe_port_as_the_gateway_settings(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FDL_PROBE_PORT", value)
    monkeypatch.setenv("FDL_GATEWAY_PORT", "8000")
    try:
        expected: int | None = GatewaySettings(_env_file=None).probe_port or 8000  # type: ignore[call-arg]
    except ValidationError:
        expected = None
    try:
        port = int(url_from_env("/healthz").rsplit(":", 1)[1].split("/")[0])
    except PortError:
        port = None
    assert port == expected


def test_the_gateway_image_healthcheck_follows_the_settings(server: str) -> None:
    """The gateway stage's HEALTHCHECK, run as Docker runs it, with a probe port the settings
    read as 0 (off): it asks FDL_GATEWAY_PORT (a shell comparing strings asked port "00")."""
    _, stages = dockerfile.parse(REPO_ROOT / "Dockerfile")
    gateway = next(s for s in stages if s.name == "gateway")
    healthcheck = gateway.last("HEALTHCHECK")
    assert healthcheck is not None
    argv = [a.replace("/healthz", "/ok") for a in healthcheck.argv()]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {"FDL_PROBE_PORT": "00", "FDL_GATEWAY_PORT": _port(server), "PATH": path}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr
