"""`fdl train` keeps following its job while the gateway or its Redis restarts (as `fdl up`'s
supervisor restarts a child that died), instead of giving up at the first refused connection."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from fdl.jobs import JobStore
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, bearer, gateway_env, write_keys_file
from harness.procs import Process, free_port, wait_http
from harness.redis import RestartableRedis


def cli_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    return env | {"FDL_URL": url, "FDL_API_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}


def fdl_cli(url: str, *args: str) -> BackgroundCli:
    return BackgroundCli(list(args), cli_env(url))


def kill_gateway(gateway: Process) -> None:
    """The gateway dies at once (SIGKILL), mid-stream, as a crash would."""
    gateway.signal(signal.SIGKILL)
    gateway.popen.wait(10)
    gateway.stop()


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


# The real `fdl` with the 60 s it rides out a gateway restart cut short, so the test can outlast it.
RECONNECT_FOR_S = 8.0  # outlasts a gateway start on a loaded 2-core machine (4 s did not, once)
PATCHED_FDL = f"""
import fdl.cli_follow as follow
follow.RECONNECT_FOR_S, follow.RETRY_S = {RECONNECT_FOR_S}, 0.2
from fdl.cli import app
app(prog_name="fdl")
"""


def test_train_resumes_after_the_last_event_shown_across_gateway_crashes(
    tmp_path: Path, logs_dir: Path, redis_url: str
) -> None:
    """Each crash drops the stream mid-way: the reconnection sends the last event's id, so no
    epoch line is printed twice; epochs arriving between crashes keep it following past
    RECONNECT_FOR_S after the first crash; a gateway that stays away ends it with exit 3."""
    port = free_port()
    env = gateway_env(
        port, redis_url, free_port(), tmp_path / "models", write_keys_file(tmp_path / "secrets")
    )
    url = f"http://127.0.0.1:{port}"
    gateway = start_gateway("gateway-resume", env, logs_dir)
    store = JobStore.from_url(redis_url)
    patched = [sys.executable, "-c", PATCHED_FDL]
    cli = BackgroundCli(["train", "mnist_logreg", "--epochs", "3"], cli_env(url), patched)
    # No worker: the test writes the job's epochs itself, as a worker's reports would be.
    try:
        job_id = cli.wait_line("submitted").split("Job ", 1)[1].split()[0]

        def epoch(n: int) -> None:
            progress = {"epoch": n, "epochs": 3, "loss": 1.0 / n, "accuracy": 0.5 + n / 10}
            assert store.update_progress(job_id, progress)

        epoch(1)
        cli.wait_line("epoch 1/3  loss")
        kill_gateway(gateway)  # mid-stream
        cli.wait_line("reconnecting")
        first_drop = time.monotonic()
        epoch(2)  # while the gateway is away
        gateway = start_gateway("gateway-resume-2", env, logs_dir)
        cli.wait_line("epoch 2/3  loss")
        assert "Reconnected" in cli.output()
        # Past the time a gateway may stay away, counted from the first crash: epoch 2 arrived
        # since, so a second crash starts a new count.
        time.sleep(max(0.0, first_drop + RECONNECT_FOR_S + 1 - time.monotonic()))
        kill_gateway(gateway)
        epoch(3)
        gateway = start_gateway("gateway-resume-3", env, logs_dir)
        cli.wait_line("epoch 3/3  loss")
        assert cli.popen.poll() is None, cli.output()
        out = cli.output()
        for n in (1, 2, 3):
            assert out.count(f"epoch {n}/3  loss") == 1, out
        assert out.count("Reconnected") == 2, out
        # A gateway that stays away: given up after RECONNECT_FOR_S, the job going on.
        kill_gateway(gateway)
        gone = time.monotonic()
        assert cli.popen.wait(RECONNECT_FOR_S + 30) == 3, cli.output()
        assert time.monotonic() - gone >= RECONNECT_FOR_S
        out = cli.output()
        assert "cannot reach the gateway" in out and f"fdl job {job_id}" in out, out
        assert "Traceback" not in out
    finally:
        cli.stop()
        gateway.stop()
