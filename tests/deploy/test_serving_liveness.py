"""The model server's liveness checks fail for a frozen server (SIGSTOP: a deadlock, a wedged
process), each within its own timeout, and pass again once it runs.

The kernel completes a TCP connection to a stopped process's listening socket, so the checks
before, a connect to the gRPC port (the Kubernetes livenessProbe ``tcpSocket``, the image's
HEALTHCHECK), passed while the server answered nothing. Now Kubernetes asks the standard gRPC
health service (``grpc:``, service ""), and the image's HEALTHCHECK sends an HTTP request to the
REST port and needs the status line within its ``timeout``. The model server runs here with the
Kubernetes container's own arguments (ports and paths swapped for local ones).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import containers as c
from harness.procs import REPO_ROOT, VENV_BIN, Process, free_port, wait_for
from harness.procs import run_command as run
from serving.flags import parse_flags

SERVING_CONFIG = REPO_ROOT / "deploy" / "serving"
CONTAINER = c.k8s_pod("Deployment", "fdl-serving")["containers"][0]
LIVENESS = CONTAINER["livenessProbe"]
# The kubelet's wait for one probe's answer, and Docker's for one HEALTHCHECK run.
PROBE_TIMEOUT_S = float(LIVENESS.get("timeoutSeconds", 1))
HEALTHCHECK = c.stages()["model-server"].last("HEALTHCHECK")
assert HEALTHCHECK is not None
IMAGE_TIMEOUT_S = float(re.search(r"--timeout=(\d+)s", HEALTHCHECK.args)[1])  # type: ignore[index]


class Server:
    def __init__(self, process: Process, grpc_port: int, rest_port: int) -> None:
        self.process, self.grpc_port, self.rest_port = process, grpc_port, rest_port

    def health(self, timeout: float) -> int:
        """The health service's answer for service "" (the kubelet's grpc probe's request)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return int(reply.status)

    def healthchecks(self) -> dict[str, tuple[list[str], float]]:
        """The image's HEALTHCHECK and compose's (tensorflow/serving's) on this server's REST
        port, with the seconds each may take."""
        compose = c.service("serving")["healthcheck"]
        found = {
            "image": (c.image_healthcheck("model-server"), IMAGE_TIMEOUT_S),
            "compose": (c.healthcheck("serving"), float(compose["timeout"].removesuffix("s"))),
        }
        swapped = {}
        for name, (argv, timeout_s) in found.items():
            swapped[name] = (c.swap(argv, "8501", str(self.rest_port)), timeout_s)
            assert swapped[name][0] != argv
        return swapped


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("models")
    assert run(["python", "-m", "fdl.repository"], {"FDL_MODEL_DIR": str(models)}).returncode == 0
    argv = c.k8s_argv(CONTAINER)
    assert argv[0] == "tensorflow_model_server"
    argv[0] = os.environ.get("FDL_TFS_BINARY") or str(VENV_BIN / "fdl-model-server")
    grpc_port, rest_port = free_port(), free_port()
    argv = c.swap(c.swap(argv, "8500", str(grpc_port)), "8501", str(rest_port))
    argv = [
        a.replace("=/models/", f"={models}/").replace("=/config/", f"={SERVING_CONFIG}/")
        for a in argv
    ]
    process = Process("deploy-serving-liveness", argv, logs_dir)
    found = Server(process, grpc_port, rest_port)
    try:
        wait_for(
            lambda: found.health(2) == health_pb2.HealthCheckResponse.SERVING,
            180,
            "the model server's health service",
            interval=0.5,
            check=process.ensure_alive,
        )
        yield found
    finally:
        process.stop()


def test_liveness_asks_the_grpc_health_service_the_server_runs() -> None:
    flags = parse_flags(c.k8s_argv(CONTAINER)[1:])
    assert "tcpSocket" not in LIVENESS, "a frozen server still accepts TCP connections"
    assert LIVENESS["grpc"]["port"] == flags.port  # gRPC probes take a number, no port name
    assert LIVENESS["grpc"].get("service", "") == ""
    assert flags.enable_grpc_healthcheck_service is True
    assert PROBE_TIMEOUT_S >= 2


def test_startup_probe_waits_as_long_as_readiness() -> None:
    """The kubelet's default timeout, 1 s, was left on the startup probe."""
    startup, readiness = CONTAINER["startupProbe"], CONTAINER["readinessProbe"]
    assert startup.get("timeoutSeconds", 1) == readiness.get("timeoutSeconds", 1)


def test_a_frozen_server_fails_every_check_within_its_timeout(server: Server) -> None:
    assert server.health(PROBE_TIMEOUT_S) == health_pb2.HealthCheckResponse.SERVING
    checks = server.healthchecks()
    for name, (argv, _) in checks.items():
        assert run(argv, timeout=30).returncode == 0, name
    server.process.signal(signal.SIGSTOP)
    try:
        # What the old checks saw: the connection is accepted all the same.
        socket.create_connection(("127.0.0.1", server.grpc_port), timeout=2).close()
        with pytest.raises(grpc.RpcError) as failed:
            server.health(PROBE_TIMEOUT_S)
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for name, (argv, timeout_s) in checks.items():
            started = time.monotonic()
            result = run(argv, timeout=30)
            took = time.monotonic() - started
            assert result.returncode != 0, (name, result)
            assert took < timeout_s, f"{name}: the check took {took:.1f} s, past its timeout"
    finally:
        server.process.signal(signal.SIGCONT)
    for name, (argv, _) in checks.items():
        wait_for(lambda a=argv: run(a, timeout=30).returncode == 0, 30, f"{name} to pass again")
    assert server.health(PROBE_TIMEOUT_S) == health_pb2.HealthCheckResponse.SERVING
