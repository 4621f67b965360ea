"""The gateway (``python -m api``) as a real process on a free port, with the tests' keys, and
the HTTP calls many tests make to it."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from api.settings import GatewaySettings
from harness.mnist import png_bytes
from harness.model_server import ModelServer
from harness.procs import Process, free_port, wait_http

ADMIN_KEY = "admin-key-for-tests-0123456789"
FILE_ADMIN_KEY = "admin-key-from-a-secret-file"
CLASSIFY_KEY = "classify-key-for-tests-abcdef"
BLANK_PNG = png_bytes(np.zeros((28, 28), np.uint8))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Administered(Protocol):
    """A gateway or a whole stack: where it listens and the headers of an admin."""

    url: str

    def admin(self) -> dict[str, str]: ...


@dataclass
class Gateway:
    process: Process
    url: str
    env: dict[str, str] = field(default_factory=dict)

    def admin(self) -> dict[str, str]:
        return bearer(ADMIN_KEY)

    def classifier(self) -> dict[str, str]:
        return bearer(CLASSIFY_KEY)

    def close(self) -> None:
        """Stops the process (``contextlib.closing`` calls it)."""
        self.process.stop()


def inprocess_settings(
    redis_url: str, server: ModelServer, database: int, **overrides: Any
) -> GatewaySettings:
    """Settings for ``create_app(settings)`` in a test process: keyed classification, a generous
    rate limit, a Redis database of its own (its jobs and rate-limit budgets stay apart). They read
    no environment and leave ``get_settings()``'s cache alone, so no test sees another's."""
    return GatewaySettings(
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{database}",
        serving_host="127.0.0.1",
        serving_grpc_port=server.port,
        model_dir=server.config_file.parent,
        api_keys=ADMIN_KEY,
        classify_keys=CLASSIFY_KEY,
        classify_open=False,
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=100_000,
        predict_timeout_s=5,
        log_json=False,
        **overrides,
    )


def gateway_env(
    port: int, redis_url: str, serving_port: int, model_dir: Path, keys_file: Path
) -> dict[str, str]:
    """The tests' gateway settings: keyed classification, a generous rate limit."""
    return {
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
    }


def write_keys_file(secrets_dir: Path) -> Path:
    """The admin keys file (a mounted secret in deployments) with ``FILE_ADMIN_KEY``."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    keys_file = secrets_dir / "admin_keys"
    keys_file.write_text(f"# admin keys\n{FILE_ADMIN_KEY}\n")
    return keys_file


def start_gateway(
    name: str,
    logs_dir: Path,
    redis_url: str,
    serving_port: int | None,
    model_dir: Path,
    secrets_dir: Path,
    **overrides: str,
) -> Gateway:
    """A gateway answering /healthz; ``serving_port`` None: no model server behind it (job routes
    need none); ``overrides``: more FDL_ settings."""
    port = free_port()
    keys_file = write_keys_file(secrets_dir)
    serving_port = serving_port or free_port()
    env = gateway_env(port, redis_url, serving_port, model_dir, keys_file) | overrides
    process = Process(name, [sys.executable, "-m", "api"], logs_dir, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", f"{name} to start", process)
    except BaseException:
        process.stop()
        raise
    return Gateway(process, url, env)


def gateway_running(*args: Any, **kwargs: str) -> closing[Gateway]:
    """:func:`start_gateway`, stopped on leaving."""
    return closing(start_gateway(*args, **kwargs))


def classify(
    url: str,
    headers: dict[str, str] | None = None,
    png: bytes = BLANK_PNG,
    client: httpx.Client | None = None,
    timeout: float = 30,
) -> httpx.Response:
    """POST one PNG as the multipart ``file`` to ``url`` (a full ``…:classify`` URL)."""
    files = [("file", ("a.png", png, "image/png"))]
    if client is not None:
        return client.post(url, files=files, headers=headers)
    return httpx.post(url, files=files, headers=headers, timeout=timeout)


def post(gateway: Gateway, path: str, **kwargs) -> httpx.Response:
    """POST ``path`` of the gateway, as a classifier unless ``headers`` are given."""
    kwargs.setdefault("headers", gateway.classifier())
    return httpx.post(f"{gateway.url}{path}", timeout=30, **kwargs)


def set_label(target: Administered, model: str, label: str, body: object) -> httpx.Response:
    """``POST /v1/models/{model}/labels/{label}`` as an admin (promote or roll back)."""
    return httpx.post(
        f"{target.url}/v1/models/{model}/labels/{label}",
        json=body,
        headers=target.admin(),
        timeout=60,
    )


def log_lines(process: Process) -> list[dict]:
    """The JSON lines of a process's log (others skipped)."""
    lines = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines
