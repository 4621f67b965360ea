"""Start real processes on free ports and wait for them by polling, with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import portpicker

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port no other process holds, nor one this process picked before (portpicker keeps
    track, so two servers started in a row never get the same one)."""
    return int(portpicker.pick_unused_port())


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.1,
    check: Callable[[], None] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value or ``timeout`` seconds pass.

    ``probe`` may raise; the last error is reported on timeout. ``check`` runs on every round and
    should raise when waiting is pointless (a child process died).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if check is not None:
            check()
        try:
            value = probe()
            if value:
                return value
        except Exception as error:
            last_error = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}: {last_error!r}")
        # Polling interval between probes, not a wait for an event.
        time.sleep(interval)


def grpc_ready(channel: Any, timeout: float = 1.0) -> bool:
    """One readiness probe of a gRPC channel, for ``wait_for``.

    A probe that times out is cancelled: its subscription would otherwise keep gRPC's
    connectivity poller running until the channel closes under it (an exception in that thread).
    """
    import grpc

    future = grpc.channel_ready_future(channel)
    try:
        future.result(timeout=timeout)
    except grpc.FutureTimeoutError:
        future.cancel()
        raise
    return True


def run_command(
    argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion from the repository root, with the venv's scripts on PATH."""
    full_env = {**os.environ, **(env or {})}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO_ROOT,
        check=False,
    )


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Process:
    """A child process with its output in a log file, stopped (with its group) at ``stop()``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or REPO_ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ensure_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; log tail:\n{self.log_tail()}"
            )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()


def wait_http(
    url: str, what: str, process: Process | None = None, timeout: float = 60, interval=0.1
) -> None:
    """Poll ``url`` until it answers 200 (deadline ``timeout``), while ``process`` lives."""
    import httpx

    wait_for(
        lambda: httpx.get(url, timeout=2).status_code == 200,
        timeout,
        what,
        interval=interval,
        check=process.ensure_alive if process is not None else None,
    )
