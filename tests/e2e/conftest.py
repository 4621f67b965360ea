"""The whole stack as `make run` starts it: `fdl up` with its own Redis, on free ports."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.procs import Process, free_port, wait_for


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

    def ready() -> bool:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

    try:
        wait_for(ready, 120, "the stack to be ready", interval=0.5, check=process.ensure_alive)
        key = (var_dir / "api_key").read_text().strip()
        yield RunningStack(process, url, key, model_dir, var_dir, env)
    finally:
        stop_and_check_no_orphans(process)


@pytest.fixture(scope="package")
def stack(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, logs_dir: Path
) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("stack")
    with fdl_up("fdl-up", stack_env(tmp, data_dir), logs_dir, tmp / "models", tmp / "var") as up:
        yield up


def stop_and_check_no_orphans(process: Process) -> None:
    """Ctrl-C must stop every child: none may outlive `fdl up`."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.alive():
        process.popen.send_signal(signal.SIGINT)
        process.popen.wait(30)
    _gone, alive = psutil.wait_procs(children, timeout=20)
    process.stop()
    for leftover in alive:
        leftover.kill()
    assert not alive, f"processes left behind by fdl up: {[p.pid for p in alive]}"
