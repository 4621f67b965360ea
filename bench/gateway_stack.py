"""Start a private stack for gateway benchmarks: Redis, the model server, the gateway.

Reuses the test harness (free ports, readiness polling with deadlines, process groups).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fdl.repository import sync_config  # noqa: E402
from harness.model_server import model_server_running  # noqa: E402
from harness.procs import Process, free_port, wait_http  # noqa: E402
from harness.redis import redis_running  # noqa: E402

BENCH_KEY = "bench-admin-key-0123456789"  # 16+ characters: shorter keys stop the gateway
DIGITS = "digits"  # the model digits_stack serves
__all__ = [
    "BENCH_KEY",
    "DIGITS",
    "REPO_ROOT",
    "BenchStack",
    "digits_stack",
    "running_stack",
    "start_gateway",
    "wait_http",
]


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
    logs = work / "logs"
    sync_config(model_dir)
    with ExitStack() as started:
        redis_url = started.enter_context(redis_running(work / "redis", logs))
        server = started.enter_context(
            model_server_running("model-server", model_dir, logs, models, timeout=180)
        )
        gateway, url, start_s, ready_s = start_gateway(logs, redis_url, server.port, model_dir)
        started.callback(gateway.stop)
        yield BenchStack(
            url,
            server.target,
            server.rest,
            model_dir,
            gateway,
            server.process,
            start_s,
            ready_s,
            redis_url,
            logs,
        )


@contextmanager
def digits_stack() -> Iterator[BenchStack]:
    """A private stack, in a temporary folder, serving a small test model (28x28x1 in, 10 classes)
    as ``DIGITS`` version 1."""
    from harness.models import build_test_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_test_model(work / "models" / DIGITS / "1", (28, 28, 1), 10, model_name=DIGITS)
        with running_stack(work / "models", work, {DIGITS: 1}) as stack:
            # Building the model imported TensorFlow here: keep its millions of objects out of
            # the bench clients' garbage collections, which would otherwise pause them.
            gc.freeze()
            yield stack


def start_gateway(
    logs: Path,
    redis_url: str,
    grpc_port: int,
    model_dir: Path,
    env: dict[str, str] | None = None,
    name: str = "gateway",
    tree: Path | None = None,
) -> tuple[Process, str, float, float]:
    """A gateway (rate limit off unless ``env`` sets it): the process, its URL, and the seconds
    from spawn to the first 200 of /healthz and of /readyz. ``tree``: another checkout whose
    ``api`` (and ``fdl``) it runs, with this interpreter (bench/gateway_cpu.py)."""
    gateway_port = free_port()
    spawned = time.perf_counter()
    gateway = Process(
        name,
        [sys.executable, "-m", "api"],
        logs,
        env={
            **({"PYTHONPATH": str(tree)} if tree else {}),
            "FDL_REDIS_URL": redis_url,
            "FDL_SERVING_GRPC_PORT": str(grpc_port),
            "FDL_GATEWAY_PORT": str(gateway_port),
            "FDL_MODEL_DIR": str(model_dir),
            "FDL_API_KEYS": BENCH_KEY,
            "FDL_RATE_LIMIT_PER_MINUTE": "0",
            **(env or {}),
        },
        cwd=tree,
    )
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_http(f"{url}/healthz", "gateway start", gateway, interval=0.01)
        start_s = time.perf_counter() - spawned
        wait_http(f"{url}/readyz", "gateway", gateway, interval=0.01)
    except BaseException:
        gateway.stop()
        raise
    return gateway, url, start_s, time.perf_counter() - spawned
