"""The whole stack as `make run` starts it: `fdl up` with its own Redis, on free ports, and the
HTTP calls that follow a job through it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from fdl.jobs import TERMINAL
from fdl.stack_supervisor import DEFAULT_STOP_WAIT_S, STOP_WAITS_S
from harness.gateway import BLANK_PNG, classify
from harness.procs import Process, free_port, wait_for, wait_http


@dataclass
class RunningStack:
    process: Process
    url: str
    api_key: str
    model_dir: Path
    var_dir: Path
    env: dict[str, str]

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Served:
    """A model version that a real job trained and the stack serves."""

    stack: RunningStack
    model: str
    version: int
    job_id: str


def stack_env(tmp: Path, data_dir: Path) -> dict[str, str]:
    return {
        "FDL_MODEL_DIR": str(tmp / "models"),
        "FDL_VAR_DIR": str(tmp / "var"),
        "FDL_DATA_DIR": str(data_dir),
        "FDL_GATEWAY_PORT": str(free_port()),
        "FDL_SERVING_GRPC_PORT": str(free_port()),
        "FDL_SERVING_REST_PORT": str(free_port()),
        # Unset on purpose: `fdl up` must start its own Redis and generate a key.
        "FDL_REDIS_URL": "",
        "FDL_API_KEYS": "",
    }


@contextmanager
def fdl_up(
    name: str, env: dict[str, str], logs_dir: Path, model_dir: Path, var_dir: Path, **kw: Any
) -> Iterator[RunningStack]:
    """`fdl up` with ``env`` (``kw``: more Process arguments), ready; stopped with a check that
    it leaves no process behind."""
    process = Process(name, ["fdl", "up"], logs_dir, env=env, **kw)
    url = f"http://127.0.0.1:{env['FDL_GATEWAY_PORT']}"
    try:
        wait_http(f"{url}/readyz", "the stack to be ready", process, timeout=120, interval=0.5)
        key = (var_dir / "api_key").read_text().strip()
        yield RunningStack(process, url, key, model_dir, var_dir, env)
    finally:
        stop_and_check_no_orphans(process)


def stop_and_check_no_orphans(process: Process) -> None:
    """Ctrl-C must stop every child: none may outlive `fdl up`."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.alive():
        process.popen.send_signal(signal.SIGINT)
        # supervisord stops its children by priority, one group after another: at worst each
        # takes its whole stop wait before SIGKILL (a gateway that lost a SIGTERM sent as it
        # started: fdl/stack_supervisor.py).
        process.popen.wait(sum(STOP_WAITS_S.values()) + DEFAULT_STOP_WAIT_S + 10)
    _gone, alive = psutil.wait_procs(children, timeout=20)
    process.stop()
    for leftover in alive:
        leftover.kill()
    assert not alive, f"processes left behind by fdl up: {[p.pid for p in alive]}"


def submit_job(stack: RunningStack, job: dict[str, Any]) -> str:
    """``POST /v1/jobs``; the new job's id."""
    response = httpx.post(f"{stack.url}/v1/jobs", json=job, headers=stack.admin(), timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_job(stack: RunningStack, job_id: str, timeout: float = 240) -> dict[str, Any]:
    """The job's record once it is in a final state."""

    def finished() -> dict[str, Any] | None:
        response = httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=stack.admin(), timeout=10)
        job = response.json()
        return job if job["status"] in TERMINAL else None

    return wait_for(
        finished, timeout, f"job {job_id}", interval=0.5, check=stack.process.ensure_alive
    )


def wait_served(stack: RunningStack, model: str, version: int, timeout: float = 60) -> None:
    url = f"{stack.url}/v1/models/{model}/versions/{version}:classify"
    wait_for(
        lambda: classify(url, png=BLANK_PNG, timeout=10).status_code == 200,
        timeout,
        f"{model} version {version} to be served",
        interval=0.5,
    )


def redis_url_of(stack: RunningStack) -> str:
    """The URL of the Redis that `fdl up` started, with its password (var/redis_url), checked
    against the port its redis-server listens on."""
    url = (stack.var_dir / "redis_url").read_text().strip()
    for child in psutil.Process(stack.process.pid).children(recursive=True):
        if "redis-server" not in child.name():
            continue
        for connection in child.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN:
                assert urlsplit(url).port == connection.laddr.port, "a stale var/redis_url"
                return url
    raise AssertionError("fdl up started no Redis")
