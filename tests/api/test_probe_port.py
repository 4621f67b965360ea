"""The probe listener (FDL_PROBE_PORT, api/probe.py) of a real gateway process: idle connections
that hold every one of the gateway port's FDL_MAX_CONNECTIONS leave /healthz, /readyz and
/metrics answering on the probe port, so the kubelet neither restarts the pod nor takes it out of
rotation."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette

from api.http_guard import GuardedHttpToolsProtocol
from api.probe import KEEPALIVE_S, PROBE_LIMITS, GatewayServer, ProbeListener, bind
from harness.gateway import ADMIN_KEY, Gateway
from harness.procs import REPO_ROOT, free_port, port_open, wait_for, wait_http
from harness.prometheus import samples, scrape, total

MAX_CONNECTIONS = 8
# The held connections stay open for the whole test (the default header timeout is 10 s).
FLOOD = {"FDL_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "FDL_HEADER_TIMEOUT_S": "120"}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _start(start: Callable[..., Gateway], name: str, **env: str) -> tuple[Gateway, str]:
    """A gateway with a probe listener, and the listener's URL once it answers."""
    probe_port = free_port()
    gateway = start(name, FDL_PROBE_PORT=str(probe_port), **env)
    probe = f"http://127.0.0.1:{probe_port}"
    wait_http(f"{probe}/healthz", "the probe listener", gateway.process)
    return gateway, probe


@pytest.fixture(scope="module")
def probed(more_gateways: Callable[..., Gateway]) -> tuple[Gateway, str]:
    return _start(more_gateways, "gateway-probe", **FLOOD)


@contextmanager
def _held(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` that send nothing, as a flood's would."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def _ask(port: int, request: bytes, timeout: float = 10) -> bytes:
    """What a new connection to ``port`` is answered before it closes (b"" for none)."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:  # refused, reset or no answer in time: nothing more
        pass
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _error_code(response: bytes) -> str:
    return str(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"])


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_a_flood_of_idle_connections_leaves_the_probe_port_answering(
    probed: tuple[Gateway, str],
) -> None:
    gateway, probe = probed
    main = {path: httpx.get(f"{gateway.url}{path}", timeout=10) for path in ("/healthz", "/readyz")}
    assert [r.status_code for r in main.values()] == [200, 200], [r.text for r in main.values()]
    with _held(_port(gateway.url), MAX_CONNECTIONS):
        # The bug on the gateway's port: a new connection, as the kubelet's probe opens, is
        # refused before its request is read.
        answer = _ask(_port(gateway.url), HEALTHZ)
        assert _status(answer) in (0, 503), answer[:300]
        if answer:
            assert _error_code(answer) == "too_many_connections"
        for path, expected in main.items():
            response = httpx.get(f"{probe}{path}", timeout=10)
            assert response.status_code == 200, (path, response.text)
            assert response.json() == expected.json(), path
            assert response.headers["content-type"] == expected.headers["content-type"]
            assert httpx.head(f"{probe}{path}", timeout=10).status_code == 200, path
        metrics = scrape(f"{probe}/metrics")
        assert total(metrics, "fdl_gateway_http_guard_total", reason="too_many_connections") >= 1
    wait_for(
        lambda: httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200,
        20,
        "the gateway's port to serve again",
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/v1/models", 404),
        ("GET", "/docs", 404),
        ("POST", "/v1/models/digits:classify", 404),
        ("POST", "/healthz", 405),
        ("DELETE", "/metrics", 405),
        ("PUT", "/readyz", 405),
    ],
)
def test_other_paths_and_methods_get_json_errors(
    probed: tuple[Gateway, str], method: str, path: str, status: int
) -> None:
    gateway, probe = probed
    response = httpx.request(method, f"{probe}{path}", timeout=10, headers=gateway.admin())
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    # The error codes of the gateway's port for the same status.
    code = {404: "not_found", 405: "method_not_allowed"}[status]
    assert response.json()["error"]["code"] == code
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"
        main = httpx.request(method, f"{gateway.url}{path}", timeout=10)
        assert main.json()["error"]["code"] == code


def test_the_probe_port_has_its_own_connection_cap(probed: tuple[Gateway, str]) -> None:
    gateway, probe = probed
    cap = PROBE_LIMITS.max_connections
    with _held(_port(probe), cap) as held:
        answer = _ask(_port(probe), HEALTHZ)
        assert _status(answer) == 503, answer[:300]
        assert _error_code(answer) == "too_many_connections"
        # The gateway's port is not affected...
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
        # ...and the probe port's idle connections are cut after its short header timeout.
        held[0].settimeout(PROBE_LIMITS.header_timeout_s + 10)
        cut = b""
        while chunk := held[0].recv(65536):
            cut += chunk
        assert _status(cut) == 408, cut[:300]
    wait_for(
        lambda: httpx.get(f"{probe}/healthz", timeout=5).status_code == 200,
        20,
        "the probe port to serve again",
    )


@pytest.mark.parametrize(
    ("sig", "returncode"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 0)]
)
def test_a_signal_closes_both_listeners(
    more_gateways: Callable[..., Gateway], sig: signal.Signals, returncode: int
) -> None:
    """Both listeners close, the app's lifespan shuts down once, and the exit status is uvicorn's
    (SIGTERM re-raised after the graceful shutdown, SIGINT status 0)."""
    gateway, probe = _start(more_gateways, f"gateway-probe-{sig.name.lower()}")
    with _held(_port(gateway.url), 1), _held(_port(probe), 1):  # idle connections on both
        gateway.process.signal(sig)
        assert gateway.process.popen.wait(timeout=30) == returncode, gateway.process.log_tail()
    assert not port_open(_port(gateway.url))
    assert not port_open(_port(probe))
    log = gateway.process.log_path.read_text()
    assert log.count("Application shutdown complete") == 1, log[-3000:]
    assert "Finished server process" in log
    assert "Traceback" not in log, log[-3000:]


def _start_refused(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m api`` with ``env``, expected to exit before it listens."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    clean.update(
        FDL_API_KEYS=ADMIN_KEY,
        FDL_REDIS_URL="redis://127.0.0.1:1/0",
        FDL_MODEL_DIR=str(tmp_path / "models"),
        PYTHONPATH=str(REPO_ROOT),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "api"],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_gateway_port_as_probe_port_is_refused_at_start(tmp_path: Path) -> None:
    port = free_port()
    result = _start_refused(tmp_path, FDL_GATEWAY_PORT=str(port), FDL_PROBE_PORT=str(port))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        f"fdl-gateway: FDL_PROBE_PORT ({port}) must differ from FDL_GATEWAY_PORT"
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert ADMIN_KEY not in result.stderr  # pydantic's own text would print the settings
    assert not port_open(port)


def test_a_probe_port_in_use_is_refused_at_start(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        probe_port = taken.getsockname()[1]
        result = _start_refused(
            tmp_path, FDL_GATEWAY_PORT=str(port), FDL_PROBE_PORT=str(probe_port)
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        f"fdl-gateway: cannot listen on FDL_PROBE_PORT {probe_port} (127.0.0.1): "
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert not port_open(port)


def _guard(metrics: str, reason: str, listener: str) -> float:
    return total(metrics, "fdl_gateway_http_guard_total", reason=reason, listener=listener)


def test_probe_port_guard_events_have_their_own_label(probed: tuple[Gateway, str]) -> None:
    """The probe port's limits count with listener="probe" (and its warnings name it); an idle
    keep-alive connection it closes (each Prometheus scrape's) is no guard event."""
    gateway, probe = probed
    before = scrape(f"{probe}/metrics")
    header = b"x-pad: " + b"a" * PROBE_LIMITS.max_header_bytes + b"\r\n"
    answer = _ask(_port(probe), b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert _status(answer) == 431, answer[:300]
    # A scrape's connection, kept alive and left idle until the probe port closes it.
    with socket.create_connection(("127.0.0.1", _port(probe)), timeout=KEEPALIVE_S + 10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while sock.recv(65536):
            pass
    after = scrape(f"{probe}/metrics")
    assert _guard(after, "headers_too_large", "probe") == (
        _guard(before, "headers_too_large", "probe") + 1
    )
    assert _guard(after, "headers_too_large", "public") == _guard(
        before, "headers_too_large", "public"
    )
    assert not samples(
        after, "fdl_gateway_http_guard_total", listener="probe", reason="keepalive_timeout"
    )
    wait_for(
        lambda: "on the probe port (FDL_PROBE_PORT)" in gateway.process.log_path.read_text(),
        10,
        "the probe port's warning",
    )


def test_refusals_pass_through_the_gateway_middleware(probed: tuple[Gateway, str]) -> None:
    """A 404 or 405 of the probe port has its x-request-id, access line and request count, as
    every answer of the gateway's app."""
    gateway, probe = probed

    def refused() -> float:
        metrics = scrape(f"{probe}/metrics")
        return total(metrics, "fdl_gateway_requests_total", method="DELETE", status="405")

    before = refused()
    response = httpx.delete(f"{probe}/metrics", headers={"x-request-id": "probe-refusal-1"})
    assert response.status_code == 405
    assert response.headers["x-request-id"] == "probe-refusal-1"
    assert httpx.get(f"{probe}/v1/models").headers.get("x-request-id")
    assert refused() == before + 1
    wait_for(
        lambda: "DELETE /metrics 405" in gateway.process.log_path.read_text(),
        10,
        "the refusal's access line",
    )


def test_the_probe_port_is_held_from_the_start() -> None:
    """Bound and listening at once: another socket with SO_REUSEADDR cannot take the port before
    the listener starts (two such sockets may share a port until one listens)."""
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError) as raised:
                other.bind(("127.0.0.1", port))
                other.listen()
            assert raised.value.errno == errno.EADDRINUSE
    finally:
        sock.close()


def _unusable_probe_socket() -> tuple[socket.socket, socket.socket]:
    """A bound socket that cannot listen (another one with SO_REUSEADDR listens on its port),
    and that other socket: under uvloop, create_server on it returns a server with no socket."""
    taker = socket.socket()
    taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taker.bind(("127.0.0.1", 0))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(taker.getsockname())
    taker.listen()
    return sock, taker


def test_a_probe_socket_that_cannot_listen_fails_the_start() -> None:
    sock, taker = _unusable_probe_socket()
    listener = ProbeListener(sock, GuardedHttpToolsProtocol)
    with taker, pytest.raises(OSError) as raised:
        uvloop.run(listener.start(Starlette()))
    assert raised.value.errno != errno.EBADF, raised.value
    assert listener.server is None


def test_a_probe_start_failure_stops_the_gateway_with_one_line() -> None:
    sock, taker = _unusable_probe_socket()
    probe_port, port = taker.getsockname()[1], free_port()
    config = uvicorn.Config(
        Starlette(), host="127.0.0.1", port=port, loop="uvloop", log_config=None
    )
    server = GatewayServer(config, ProbeListener(sock, GuardedHttpToolsProtocol))
    config.load()
    with taker, pytest.raises(SystemExit) as exited:
        server.run()
    assert str(exited.value.code).startswith(
        f"fdl-gateway: cannot listen on FDL_PROBE_PORT {probe_port} (127.0.0.1): "
    ), exited.value.code
    assert not port_open(port)
