"""Start a private stack for gateway benchmarks: Redis, the model server, the gateway.

Reuses the test helpers (free ports, readiness polling with deadlines, process groups).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from fdl.redis_server import redis_server_argv  # noqa: E402
from fdl.repository import sync_config  # noqa: E402
from tests.support.procs import Process, free_port, wait_for  # noqa: E402

BENCH_KEY = "bench-admin-key"


@dataclass
class BenchStack:
    url: str
    grpc_target: str
    rest_url: str  # the model server's REST API
    model_dir: Path
    gateway: Process
    server: Process
    gateway_start_s: float  # spawn to the first 200 from /healthz
    gateway_ready_s: float  # spawn to the first 200 from /readyz (Redis and model server answer)
    redis_url: str
    logs: Path


@contextmanager
def running_stack(model_dir: Path, work: Path, models: dict[str, int]) -> Iterator[BenchStack]:
    """``models``: name -> version to wait for."""
    from tests.api.support import versions_available

    logs = work / "logs"
    sync_config(model_dir)
    redis_port, grpc_port, rest_port = free_port(), free_port(), free_port()
    processes: list[Process] = []
    try:
        processes.append(Process("redis", redis_server_argv(redis_port, work / "redis"), logs))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        wait_for(redis.Redis.from_url(redis_url).ping, 20, "redis")
        server = Process(
            "model-server",
            [
                sys.executable,
                "-m",
                "serving",
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                f"--model_config_file={model_dir / 'models.config'}",
                "--model_config_file_poll_wait_seconds=1",
            ],
            logs,
            env={"TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        processes.append(server)
        target = f"127.0.0.1:{grpc_port}"
        for name, version in models.items():
            wait_for(
                lambda n=name, v=version: v in versions_available(target, n),
                180,
                f"{name} v{version}",
                interval=0.2,
                check=server.ensure_alive,
            )
        gateway, url, start_s, ready_s = start_gateway(logs, redis_url, grpc_port, model_dir)
        processes.append(gateway)
        rest_url = f"http://127.0.0.1:{rest_port}"
        yield BenchStack(
            url, target, rest_url, model_dir, gateway, server, start_s, ready_s, redis_url, logs
        )
    finally:
        for process in reversed(processes):
            process.stop()


def start_gateway(
    logs: Path,
    redis_url: str,
    grpc_port: int,
    model_dir: Path,
    env: dict[str, str] | None = None,
    name: str = "gateway",
) -> tuple[Process, str, float, float]:
    """A gateway (rate limit off unless ``env`` sets it): the process, its URL, and the seconds
    from spawn to the first 200 of /healthz and of /readyz."""
    gateway_port = free_port()
    spawned = time.perf_counter()
    gateway = Process(
        name,
        [sys.executable, "-m", "api"],
        logs,
        env={
            "FDL_REDIS_URL": redis_url,
            "FDL_SERVING_GRPC_PORT": str(grpc_port),
            "FDL_GATEWAY_PORT": str(gateway_port),
            "FDL_MODEL_DIR": str(model_dir),
            "FDL_API_KEYS": BENCH_KEY,
            "FDL_RATE_LIMIT_PER_MINUTE": "0",
            **(env or {}),
        },
    )
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_http(f"{url}/healthz", "gateway start", gateway)
        start_s = time.perf_counter() - spawned
        wait_http(f"{url}/readyz", "gateway", gateway)
    except BaseException:
        gateway.stop()
        raise
    return gateway, url, start_s, time.perf_counter() - spawned


def wait_http(url: str, what: str, process: Process, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200 (deadline ``timeout``), while ``process`` lives."""
    wait_for(
        lambda: httpx.get(url, timeout=2).status_code == 200,
        timeout,
        what,
        interval=0.01,
        check=process.ensure_alive,
    )
