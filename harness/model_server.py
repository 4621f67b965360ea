"""The project's model server (``python -m serving``) on free ports, and waiting for its models."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from fdl.wire.tfs_pb2 import GetModelStatusRequest, GetModelStatusResponse, ModelSpec
from harness.procs import Process, free_port, wait_for
from harness.prometheus import scrape, total

AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE


@dataclass
class ModelServer:
    process: Process
    port: int
    rest_port: int
    config_file: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


def start_model_server(
    name: str,
    model_dir: Path,
    logs_dir: Path,
    port: int | None = None,
    flags: Sequence[str] = (),
) -> ModelServer:
    """Started, not yet serving: :func:`wait_for_models` waits for what a test needs."""
    port = port or free_port()
    rest_port = free_port()
    config_file = model_dir / "models.config"
    argv = [
        sys.executable,
        "-m",
        "serving",
        f"--port={port}",
        f"--rest_api_port={rest_port}",
        f"--model_config_file={config_file}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        # As `fdl up` starts it: labels in labels.json must not stop a restart.
        "--allow_version_labels_for_unavailable_models=true",
        *flags,
    ]
    process = Process(name, argv, logs_dir, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    return ModelServer(process, port, rest_port, config_file)


@contextmanager
def model_server_running(
    name: str,
    model_dir: Path,
    logs_dir: Path,
    wanted: dict[str, int],
    flags: Sequence[str] = (),
    timeout: float = 120,
) -> Iterator[ModelServer]:
    """A model server serving each model's ``wanted`` version, stopped on leaving."""
    server = start_model_server(name, model_dir, logs_dir, flags=flags)
    try:
        wait_for_models(server, wanted, timeout)
        yield server
    finally:
        server.process.stop()


def ok_requests(server: ModelServer, model: str = "digits") -> float:
    """Successful requests for ``model`` so far, from the server's Prometheus metrics at /metrics
    (started with a monitoring config that enables them)."""
    text = scrape(f"{server.rest}/metrics")
    return total(text, ":tensorflow:serving:request_count", model_name=model, status="OK")


def versions_available(target: str, model: str) -> set[int]:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString,
        )
        response = call(GetModelStatusRequest(model_spec=ModelSpec(name=model)), timeout=2)
    return {s.version for s in response.model_version_status if s.state == AVAILABLE}


def wait_for_models(server: ModelServer, wanted: dict[str, int], timeout: float = 120) -> None:
    """Wait until each model's given version is AVAILABLE."""
    for model, version in wanted.items():
        wait_for(
            lambda m=model, v=version: v in versions_available(server.target, m),
            timeout,
            f"{model} version {version} to be served",
            interval=0.2,
            check=server.process.ensure_alive,
        )
