"""`fdl up` refuses, before it starts anything, what would leave a broken stack running: a port
of the gateway or the model server already taken (the child would fail to start again and again
under supervisord), or a second stack over the same var folder (a second Redis on the first one's
data, its var/redis_url overwritten)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest

from harness.procs import Process, free_port, wait_for
from harness.stack import stop_and_check_no_orphans

KEY = "admin-key-for-stack-tests-0123"


def up_env(tmp: Path) -> dict[str, str]:
    return {
        "FDL_MODEL_DIR": str(tmp / "var" / "models"),
        "FDL_VAR_DIR": str(tmp / "var"),
        "FDL_DATA_DIR": str(tmp / "var" / "data"),
        "FDL_GATEWAY_PORT": str(free_port()),
        "FDL_SERVING_GRPC_PORT": str(free_port()),
        "FDL_SERVING_REST_PORT": str(free_port()),
        "FDL_REDIS_URL": "",
        "FDL_API_KEYS": KEY,
    }


def fdl_up_exit(name: str, env: dict[str, str], tmp: Path, logs_dir: Path) -> tuple[int, str]:
    """Run `fdl up` and wait for it to exit (a stack it started anyway is stopped)."""
    process = Process(name, ["fdl", "up"], logs_dir, env=env, cwd=tmp)
    try:
        wait_for(lambda: not process.alive(), 60, f"{name} to refuse and exit")
    finally:
        stop_and_check_no_orphans(process)
    return process.popen.returncode, " ".join(process.log_tail().split())


@pytest.mark.parametrize(
    ("setting", "host"),
    [("FDL_GATEWAY_PORT", "127.0.0.1"), ("FDL_SERVING_REST_PORT", "0.0.0.0")],
)
def test_a_port_in_use_stops_fdl_up_before_anything_starts(
    setting: str, host: str, tmp_path: Path, logs_dir: Path
) -> None:
    env = up_env(tmp_path)
    with socket.socket() as taken:
        taken.bind((host, int(env[setting])))
        taken.listen()
        code, output = fdl_up_exit(f"fdl-up-port-{setting}", env, tmp_path, logs_dir)
    assert code == 2, output
    assert f"port {env[setting]} ({setting}" in output and "already in use" in output, output
    assert "Traceback" not in output
    assert not (tmp_path / "var" / "supervisord.conf").exists()
    assert not (tmp_path / "var" / "redis_url").exists()


def test_a_second_fdl_up_over_the_same_var_folder_is_refused(
    tmp_path: Path, logs_dir: Path
) -> None:
    first = Process("fdl-up-first", ["fdl", "up"], logs_dir, env=up_env(tmp_path), cwd=tmp_path)
    try:
        # supervisord has replaced `fdl up` (same pid) once it has written its pid file.
        pid_file = tmp_path / "var" / "supervisord.pid"
        wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip() == str(first.pid),
            60,
            "supervisord to run the first stack",
            check=first.ensure_alive,
        )
        assert "supervisord" in " ".join(psutil.Process(first.pid).cmdline())
        redis_url = (tmp_path / "var" / "redis_url").read_text()

        code, output = fdl_up_exit("fdl-up-second", up_env(tmp_path), tmp_path, logs_dir)
        assert code == 2, output
        assert f"another `fdl up` (supervisord pid {first.pid}) is running" in output, output
        assert (tmp_path / "var" / "redis_url").read_text() == redis_url
        assert first.alive(), first.log_tail()
    finally:
        stop_and_check_no_orphans(first)

    # Once the first has stopped, the folder is free again.
    assert os.path.exists(tmp_path / "var" / "fdl-up.lock")
    env = up_env(tmp_path)
    with socket.socket() as taken:  # stop the next one at its port check, after the lock
        taken.bind(("127.0.0.1", int(env["FDL_GATEWAY_PORT"])))
        taken.listen()
        code, output = fdl_up_exit("fdl-up-third", env, tmp_path, logs_dir)
    assert code == 2 and "already in use" in output, output
