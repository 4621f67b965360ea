"""SIGHUP stops `fdl up` as SIGTERM does: every child stopped, nothing left running, the var
folder's lock free. SIGHUP is what a closed terminal sends (the kernel hangs the terminal up and
signals its session leader), and what `kill -HUP` sends; supervisord on its own takes it as
"restart": it stopped every child and started them again (a running training job killed), or,
with its output on the hung-up terminal, crashed and left every child running."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from fdl.cli_up import LOCK_FILE, leftovers, stop_leftovers
from harness.procs import VENV_BIN, Process, wait_for
from harness.stack import stack_env, stop_and_check_no_orphans

CHILDREN = ("redis-server", "fdl-model-server", "fdl-worker", "fdl-gateway")


@pytest.fixture(autouse=True)
def sighup_handled_by_default() -> Iterator[None]:
    """A suite run under `nohup` (as a CI job may be) has SIGHUP ignored, and an ignored signal
    stays ignored across exec: `fdl up` would then rightly keep ignoring it, as a stack started
    under nohup should. The stacks here start as from a terminal (the nohup test says nohup)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def ready(pid: int, env: dict[str, str], check: Callable[[], None]) -> list[psutil.Process]:
    """Wait for the stack's /readyz (``check`` raises if `fdl up` died); its processes then."""
    url = f"http://127.0.0.1:{env['FDL_GATEWAY_PORT']}/readyz"
    wait_for(
        lambda: httpx.get(url, timeout=2).status_code == 200,
        120,
        "the stack to be ready",
        interval=0.5,
        check=check,
    )
    descendants = psutil.Process(pid).children(recursive=True)
    commands = " ".join(" ".join(p.cmdline()) for p in descendants)
    assert all(name in commands for name in CHILDREN), commands
    return descendants


def lock_free(var_dir: Path) -> bool:
    fd = os.open(var_dir / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def assert_stack_gone(var_dir: Path, descendants: list[psutil.Process]) -> None:
    """Every process the stack had is gone, none was started again, and the lock is free."""
    _gone, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert leftovers(var_dir) == []  # a child started again would be one
    assert lock_free(var_dir)


@contextlib.contextmanager
def cleanup(var_dir: Path) -> Iterator[None]:
    """Whatever a failed test left running over ``var_dir`` is stopped."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            stop_leftovers(leftovers(var_dir))


def test_sighup_stops_the_stack_as_sigterm_does(tmp_path: Path, logs_dir: Path) -> None:
    """`kill -HUP`, output to a file: supervisord used to restart the whole stack."""
    env = stack_env(tmp_path, tmp_path / "data")
    var_dir = (tmp_path / "var").resolve()
    process = Process("fdl-up-sighup", ["fdl", "up"], logs_dir, env=env, cwd=tmp_path)
    with cleanup(var_dir):
        try:
            descendants = ready(process.pid, env, process.ensure_alive)
            os.kill(process.pid, signal.SIGHUP)
            wait_for(lambda: not process.alive(), 60, "fdl up to stop on SIGHUP")
            assert process.popen.returncode == 0, process.log_tail()
            assert_stack_gone(var_dir, descendants)
            log = (var_dir / "supervisord.log").read_text()
            after = log.rsplit("received SIGHUP", 1)[1]
            assert "stopped: gateway" in after and "stopped: redis" in after, after
            assert "spawned" not in after, after
        finally:
            stop_and_check_no_orphans(process)


def test_under_nohup_sighup_stays_ignored(tmp_path: Path, logs_dir: Path) -> None:
    """`nohup fdl up`: SIGHUP was ignored before the exec, and stays ignored (the user asked for
    a stack that outlives the terminal); a SIGTERM later stops it as usual."""
    env = stack_env(tmp_path, tmp_path / "data")
    var_dir = (tmp_path / "var").resolve()
    process = Process("fdl-up-nohup", ["nohup", "fdl", "up"], logs_dir, env=env, cwd=tmp_path)
    with cleanup(var_dir):
        try:
            descendants = ready(process.pid, env, process.ensure_alive)
            # An ignored signal is dropped when it is sent; one that is handled is pending now.
            os.kill(process.pid, signal.SIGHUP)
            url = f"http://127.0.0.1:{env['FDL_GATEWAY_PORT']}/readyz"
            assert httpx.get(url, timeout=5).status_code == 200
            process.popen.send_signal(signal.SIGTERM)
            wait_for(lambda: not process.alive(), 60, "fdl up to stop on SIGTERM")
            assert_stack_gone(var_dir, descendants)
            log = (var_dir / "supervisord.log").read_text()
            assert "received SIGHUP" not in log, log
            assert "received SIGTERM" in log, log
        finally:
            stop_and_check_no_orphans(process)


class Terminal:
    """A pseudo-terminal whose output is read as it comes (a full one would block the writer)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.output = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start_reading(self) -> None:
        """Once the process on it has started (no thread runs while it forks)."""
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self.master], [], [], 0.1)
            if readable:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.output += chunk

    def close(self) -> None:
        """Close the terminal, as a closed terminal window does: the kernel hangs it up and
        signals its session leader with SIGHUP. The reader stops first: a read blocked on the
        terminal would keep it open."""
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(10)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


def take_terminal() -> None:
    """In the child, after setsid(): the terminal on stdin becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.parametrize("stderr", ["terminal", "file"])
def test_closing_its_terminal_stops_the_stack(stderr: str, tmp_path: Path, logs_dir: Path) -> None:
    """`fdl up` in a terminal that is closed. With everything on the terminal, supervisord used
    to crash (EIO writing to it) and leave every child running; with stderr to a file, to stop
    every child and fail to start them again (EIO opening /dev/stdout), and live on with none."""
    env = stack_env(tmp_path, tmp_path / "data")
    var_dir = (tmp_path / "var").resolve()
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    terminal = Terminal()
    errors_path = logs_dir / f"fdl-up-hangup-{stderr}.stderr"
    with cleanup(var_dir), open(errors_path, "wb") as errors:
        process = subprocess.Popen(
            ["fdl", "up"],
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave if stderr == "terminal" else errors,
            env=full_env,
            cwd=tmp_path,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
        os.close(terminal.slave)
        terminal.start_reading()

        def alive() -> None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"fdl up exited: {terminal.output[-4000:].decode(errors='replace')}"
                )

        try:
            descendants = ready(process.pid, env, alive)
            terminal.close()
            wait_for(lambda: process.poll() is not None, 60, "fdl up to stop on the hang-up")
            assert process.returncode == 0, errors_path.read_text()
            assert_stack_gone(var_dir, descendants)
            log = (var_dir / "supervisord.log").read_text().rsplit("received SIGHUP", 1)[1]
            assert "stopped: gateway" in log and "stopped: redis" in log, log
            assert "spawn" not in log, log
        finally:
            terminal.close()
            if process.poll() is None:
                process.kill()
                process.wait(10)
