"""The gRPC front-end flags: --grpc_socket_path, --grpc_channel_arguments and --ssl_config_file.

Servers run as real subprocesses, one per configuration, and are called with the official
tensorflow_serving stubs; the TLS material is a throwaway CA made with the ``openssl`` CLI.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from harness.procs import Process, free_port, grpc_ready, wait_for
from harness.tfs import expected_scores, images, predict_request, scores_of
from harness.tls import make_pki, ssl_config

SERVER = [sys.executable, "-m", "serving"]
MODEL = "tiny"
SMALL, LARGE = images(1, seed=3), images(32, seed=4)  # 64 and 2048 bytes of tensor content
TLS_NAME = [("grpc.ssl_target_name_override", "localhost")]


# --- helpers and fixtures ------------------------------------------------------------------------
@dataclass
class Running:
    port: int
    socket_path: Path


def _predict(channel: grpc.Channel, array: np.ndarray) -> np.ndarray:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return scores_of(stub.Predict(predict_request(MODEL, array), timeout=30))


def _predict_code(channel: grpc.Channel, array: np.ndarray) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _predict(channel, array)
    return info.value.code()


def _run_to_exit(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER, *flags], capture_output=True, text=True, timeout=120, check=False
    )


def _tls_channel(target: str, pki: Path, client_cert: bool = False) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(target, credentials, options=TLS_NAME)


@pytest.fixture(scope="module")
def model_path(model_stock, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grpc-models")
    model_stock.install("a", root / MODEL, 1)
    return root / MODEL


@pytest.fixture(scope="module")
def model_flags(model_path) -> list[str]:
    return [f"--model_base_path={model_path}", f"--model_name={MODEL}"]


@pytest.fixture(scope="module")
def launch(logs_dir, model_flags) -> Iterator[Callable[..., Running]]:
    """Start a server and wait until ``channel(port)`` (with its credentials) is ready."""
    started: list[Process] = []

    def start(
        name: str,
        flags: list[str],
        channel: Callable[[int], grpc.Channel],
        socket_path: Path,
        cwd: Path | None = None,
    ) -> Running:
        port = free_port()
        argv = [*SERVER, f"--port={port}", *model_flags, *flags]
        started.append(process := Process(name, argv, logs_dir, cwd=cwd))

        def ready() -> bool:
            with channel(port) as probe:
                return grpc_ready(probe)

        wait_for(ready, 90, f"{name} model server", check=process.ensure_alive)
        return Running(port, socket_path)

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def plain(launch, tmp_path_factory) -> Running:
    """Plain gRPC on TCP and on a relative socket path where a stale socket file was left, with
    the receive limit lowered to 1 KiB by --grpc_channel_arguments."""
    folder = tmp_path_factory.mktemp("sock")
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listened on: a stale file
        dead.bind(str(folder / "grpc.sock"))
    assert (folder / "grpc.sock").is_socket()
    flags = ["--grpc_socket_path=grpc.sock"]
    flags.append("--grpc_channel_arguments= grpc.max_receive_message_length = 1024 ,")
    channel = lambda port: grpc.insecure_channel(f"127.0.0.1:{port}")  # noqa: E731
    return launch("grpc-plain", flags, channel, folder / "grpc.sock", cwd=folder)


@pytest.fixture(scope="module")
def tls(launch, pki, tmp_path_factory) -> Running:
    folder = tmp_path_factory.mktemp("tls")
    config = ssl_config(folder / "ssl.config", pki)
    flags = [f"--ssl_config_file={config}", f"--grpc_socket_path={folder}/g.sock"]
    channel = lambda port: _tls_channel(f"127.0.0.1:{port}", pki)  # noqa: E731
    return launch("grpc-tls", flags, channel, folder / "g.sock")


@pytest.fixture(scope="module")
def mtls(launch, pki, tmp_path_factory) -> Running:
    folder = tmp_path_factory.mktemp("mtls")
    config = ssl_config(folder / "ssl.config", pki, client_verify=True)
    channel = lambda port: _tls_channel(f"127.0.0.1:{port}", pki, client_cert=True)  # noqa: E731
    return launch("grpc-mtls", [f"--ssl_config_file={config}"], channel, folder / "none.sock")


# --- UNIX socket and channel arguments ----------------------------------------------------------
def test_unix_socket_serves_the_same_scores_as_tcp(plain, model_path) -> None:
    with grpc.insecure_channel(f"unix:{plain.socket_path}") as over_socket:
        via_socket = _predict(over_socket, SMALL)
    with grpc.insecure_channel(f"127.0.0.1:{plain.port}") as over_tcp:
        via_tcp = _predict(over_tcp, SMALL)
    np.testing.assert_array_equal(via_socket, via_tcp)
    np.testing.assert_allclose(via_tcp, expected_scores(model_path / "1", SMALL), atol=1e-6)


def test_channel_arguments_limit_both_listeners(plain) -> None:
    """1 KiB replaces our 2 GiB default: the 64-byte request passes, the 2 KiB one is refused."""
    for target in (f"127.0.0.1:{plain.port}", f"unix:{plain.socket_path}"):
        with grpc.insecure_channel(target) as channel:
            assert _predict(channel, SMALL).shape == (1, 4)
            assert _predict_code(channel, LARGE) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_live_socket_is_not_taken_over(plain, model_flags) -> None:
    result = _run_to_exit(
        *model_flags, f"--port={free_port()}", f"--grpc_socket_path={plain.socket_path}"
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "another process is listening on it" in result.stderr
    with grpc.insecure_channel(f"unix:{plain.socket_path}") as channel:
        assert _predict(channel, SMALL).shape == (1, 4)  # still the first server's socket


def test_socket_only_server(model_flags, logs_dir, tmp_path, model_path) -> None:
    """--port=0 with --grpc_socket_path: gRPC only on the socket (nothing on TCP)."""
    path = tmp_path / "only.sock"
    argv = [*SERVER, "--port=0", "--rest_api_port=0", f"--grpc_socket_path={path}", *model_flags]
    process = Process("grpc-socket-only", argv, logs_dir)
    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            wait_for(
                lambda: grpc_ready(channel),
                90,
                "socket-only model server",
                check=process.ensure_alive,
            )
            np.testing.assert_allclose(
                _predict(channel, SMALL), expected_scores(model_path / "1", SMALL), atol=1e-6
            )
        assert "Running gRPC ModelServer at 0.0.0.0" not in process.log_tail(200_000)
    finally:
        process.stop()


# --- TLS ------------------------------------------------------------------------------------------
def test_tls_on_port_and_socket(tls, plain, pki) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{plain.port}") as reference:
        expected = _predict(reference, SMALL)
    for target in (f"127.0.0.1:{tls.port}", f"unix:{tls.socket_path}"):
        with _tls_channel(target, pki) as channel:
            np.testing.assert_array_equal(_predict(channel, SMALL), expected)
            assert _predict(channel, LARGE).shape == (32, 4)  # the 2 GiB default limit
        with grpc.insecure_channel(target) as plaintext:
            assert _predict_code(plaintext, SMALL) == grpc.StatusCode.UNAVAILABLE


def test_client_verify_requires_a_client_certificate(mtls, pki) -> None:
    target = f"127.0.0.1:{mtls.port}"
    with _tls_channel(target, pki, client_cert=True) as channel:
        assert _predict(channel, SMALL).shape == (1, 4)
    with _tls_channel(target, pki) as anonymous:
        assert _predict_code(anonymous, SMALL) == grpc.StatusCode.UNAVAILABLE


# --- start-up errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "needle"),
    [
        ("--grpc_socket_path=/nonexistent-dir/g.sock", "directory /nonexistent-dir does not exist"),
        ("--grpc_channel_arguments=a=1,grpc.max_receive_message_length", "'grpc.max_receive_mes"),
        ("--ssl_config_file=/nonexistent-dir/ssl.config", "/nonexistent-dir/ssl.config"),
        ("--ssl_config_file={mismatch}", "server_key does not match server_cert"),
        ("--port={busy}", "cannot listen for gRPC on port"),
    ],
    ids=["socket-dir", "channel-args", "ssl-missing", "ssl-key-mismatch", "port-in-use"],
)
def test_bad_grpc_flags_fail_at_start(flag, needle, model_flags, pki, tmp_path) -> None:
    mismatch = ssl_config(tmp_path / "ssl.config", pki, key="client")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        flag = flag.format(mismatch=mismatch, busy=busy.getsockname()[1])
        result = _run_to_exit(*model_flags, f"--port={free_port()}", flag)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Failed to start server. Error: " in result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
