"""Helpers for the gateway tests: real model servers and real gateway processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from fdl.wire.tfs_pb2 import GetModelStatusRequest, GetModelStatusResponse, ModelSpec
from tests.support.procs import Process, free_port, wait_for
from tests.support.prometheus import sample_sums

ADMIN_KEY = "admin-key-for-tests-0123456789"
FILE_ADMIN_KEY = "admin-key-from-a-secret-file"
CLASSIFY_KEY = "classify-key-for-tests-abcdef"


@dataclass
class ModelServer:
    process: Process
    port: int
    rest_port: int
    config_file: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_model_server(
    name: str,
    model_dir: Path,
    logs_dir: Path,
    port: int | None = None,
    flags: Sequence[str] = (),
) -> ModelServer:
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


def ok_requests(server: ModelServer, model: str = "digits") -> float:
    """Successful requests for ``model`` so far, from the server's Prometheus metrics at /metrics
    (started with a monitoring config that enables them)."""
    prefix = f':tensorflow:serving:request_count{{model_name="{model}",status="OK"}}'
    return sample_sums(f"http://127.0.0.1:{server.rest_port}/metrics", prefix)[0]


def versions_available(target: str, model: str) -> set[int]:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString,
        )
        response = call(GetModelStatusRequest(model_spec=ModelSpec(name=model)), timeout=2)
    return {s.version for s in response.model_version_status if s.state == 30}


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


@dataclass
class Gateway:
    process: Process
    url: str
    env: dict[str, str] = field(default_factory=dict)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def classifier(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {CLASSIFY_KEY}"}


def start_gateway(
    name: str,
    logs_dir: Path,
    redis_url: str,
    serving_port: int,
    model_dir: Path,
    secrets_dir: Path,
    **overrides: str,
) -> Gateway:
    port = free_port()
    secrets_dir.mkdir(parents=True, exist_ok=True)
    keys_file = secrets_dir / "admin_keys"
    keys_file.write_text(f"# admin keys\n{FILE_ADMIN_KEY}\n")
    env = {
        "FDL_REDIS_URL": redis_url,
        "FDL_SERVING_HOST": "127.0.0.1",
        "FDL_SERVING_GRPC_PORT": str(serving_port),
        "FDL_GATEWAY_HOST": "127.0.0.1",
        "FDL_GATEWAY_PORT": str(port),
        "FDL_MODEL_DIR": str(model_dir),
        "FDL_API_KEYS": ADMIN_KEY,
        "FDL_API_KEYS_FILE": str(keys_file),
        "FDL_CLASSIFY_KEYS": CLASSIFY_KEY,
        "FDL_CLASSIFY_OPEN": "false",
        "FDL_RATE_LIMIT_PER_MINUTE": "1000000",
        "FDL_RATE_LIMIT_BURST": "100000",
        "FDL_PREDICT_TIMEOUT_S": "5",
        **overrides,
    }
    process = Process(name, [sys.executable, "-m", "api"], logs_dir, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
        60,
        f"{name} to start",
        interval=0.1,
        check=process.ensure_alive,
    )
    return Gateway(process, url, env)


def log_lines(process: Process) -> list[dict]:
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines
