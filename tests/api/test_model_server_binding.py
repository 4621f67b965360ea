"""`fdl up` keeps the unauthenticated model server on the loopback interface (issue 15)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psutil
import pytest

from fdl.settings import CommonSettings
from fdl.stack import model_server_argv
from harness.model_server import start_model_server, wait_for_models
from harness.procs import port_open, wait_for


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_stack_binds_our_model_server_to_the_serving_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)  # no tensorflow_model_server on PATH
    argv = model_server_argv(CommonSettings(), tmp_path / "models.config")
    assert argv[0] == "fdl-model-server"
    assert "--bind_address=127.0.0.1" in argv


def test_model_server_listens_on_loopback_only(model_dir: Path, logs_dir: Path) -> None:
    server = start_model_server(
        "model-server-loopback", model_dir, logs_dir, flags=["--bind_address=127.0.0.1"]
    )
    try:
        wait_for_models(server, {"digits": 2})
        # The REST front end starts after the gRPC one has answered.
        wait_for(lambda: port_open(server.rest_port), 30, "model server REST port")
        listening = [
            c.laddr
            for c in psutil.Process(server.process.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        ports = {address.port for address in listening}
        assert {server.port, server.rest_port} <= ports, listening
        assert all(_loopback(address.ip) for address in listening), listening
    finally:
        server.process.stop()
