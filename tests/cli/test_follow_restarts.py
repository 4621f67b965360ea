"""`fdl train` keeps following its job while the gateway or its Redis restarts (as `fdl up`'s
supervisor restarts a child that died), instead of giving up at the first refused connection."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, bearer, gateway_env, write_keys_file
from harness.procs import Process, free_port, wait_http
from harness.redis import RestartableRedis


def fdl_cli(url: str, *args: str) -> BackgroundCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": url, "FDL_API_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    return BackgroundCli(list(args), env)


def start_gateway(name: str, env: dict[str, str], logs_dir: Path) -> Process:
    process = Process(name, [sys.executable, "-m", "api"], logs_dir, env=env)
    try:
        wait_http(f"http://127.0.0.1:{env['FDL_GATEWAY_PORT']}/healthz", name, process)
    except BaseException:
        process.stop()
        raise
    return process


@pytest.mark.parametrize("restarted", ["gateway", "redis"])
def test_train_follows_its_job_across_a_restart(
    restarted: str, tmp_path: Path, logs_dir: Path
) -> None:
    redis = RestartableRedis(tmp_path / "redis", logs_dir, f"redis-follow-{restarted}")
    redis.start()
    port = free_port()
    keys_file = write_keys_file(tmp_path / "secrets")
    env = gateway_env(port, redis.url, free_port(), tmp_path / "models", keys_file)
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway(f"gateway-follow-{restarted}", env, logs_dir)
    # No worker: the job stays queued until the test cancels it through the gateway.
    cli = fdl_cli(url, "train", "mnist_logreg", "--epochs", "1")
    try:
        job_id = cli.wait_line("submitted").split("Job ", 1)[1].split()[0]
        if restarted == "gateway":
            gateway.signal(signal.SIGKILL)
            gateway.popen.wait(10)
            gateway.stop()
        else:
            redis.stop()
        cli.wait_line("reconnecting")
        assert cli.popen.poll() is None, cli.output()
        if restarted == "gateway":
            gateway = start_gateway(f"gateway-follow-{restarted}-2", env, logs_dir)
        else:
            redis.start()
        cancelled = httpx.delete(f"{url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)
        assert cancelled.status_code == 200, cancelled.text
        assert cli.popen.wait(90) == 5, cli.output()  # the followed job was cancelled
        assert "Reconnected" in cli.output() and "cancelled" in cli.output()
        assert "Traceback" not in cli.output()
    finally:
        cli.stop()
        gateway.stop()
        redis.stop()
