"""Redis, the training worker, Flower and TensorBoard: their container commands, run here."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.stack import WORKER_ARGV
from harness import containers as c
from harness.procs import Process, free_port, port_open, wait_for
from harness.procs import run_command as run


def test_redis_command_persists_and_answers_its_healthcheck(tmp_path: Path, logs_dir: Path) -> None:
    argv = c.command("redis")
    statefulset = c.k8s_pod("StatefulSet", "fdl-redis")["containers"][0]
    assert c.k8s_argv(statefulset) == argv
    health = c.healthcheck("redis")
    assert statefulset["readinessProbe"]["exec"]["command"][1:] == health[1:]
    # Liveness also accepts LOADING (a large append-only file being read): checked here on PONG.
    liveness = statefulset["livenessProbe"]["exec"]["command"]
    port = free_port()
    assert "/data" in argv
    local = [*c.swap(argv, "/data", str(tmp_path)), "--port", str(port), "--bind", "127.0.0.1"]
    server = Process("deploy-redis", local, logs_dir)
    try:
        wait_for(lambda: port_open(port), 20, "redis", check=server.ensure_alive)
        local_health, local_liveness = (
            [a.replace("redis-cli ping", f"redis-cli -p {port} ping") for a in probe]
            for probe in (health, liveness)
        )
        assert local_health != health and local_liveness != liveness
        assert run(local_health).returncode == 0
        assert run(local_liveness).returncode == 0
        client = redis.Redis(port=port)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("job:1", "queued")
        client.close()
        wait_for(lambda: any(tmp_path.rglob("*.aof")), 10, "the append-only file")
    finally:
        server.stop()
    assert run(local_health).returncode != 0
    assert run(local_liveness).returncode != 0


WORKER_QUEUE = "deploy-test-queue"


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, logs_dir: Path
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("worker")
    env = {**c.image_env("worker"), **c.environment("worker")}
    env.pop("HOME", None)
    env.update(
        FDL_REDIS_URL=redis_url,
        FDL_MODEL_DIR=str(root / "models"),
        FDL_DATA_DIR=str(root / "data"),
        FDL_VAR_DIR=str(root / "var"),
        MPLCONFIGDIR=str(root / "matplotlib"),
    )
    # Not the default queue: the worker must consume the queue the gateway sends to.
    env["FDL_TRAINING_QUEUE"] = WORKER_QUEUE
    process = Process("deploy-worker", c.command("worker"), logs_dir, env=env)
    # `podman exec` and `podman healthcheck run` do not set HOSTNAME: the probes must not need it.
    env.pop("HOSTNAME", None)
    probe_env = env
    try:
        wait_for(
            lambda: run(c.image_healthcheck("worker"), probe_env).returncode == 0,
            180,
            "the worker's image healthcheck",
            interval=0.5,
            check=process.ensure_alive,
        )
        yield probe_env
    finally:
        process.stop(timeout=30)


def test_worker_command_is_the_same_everywhere() -> None:
    container = c.k8s_pod("Deployment", "fdl-worker")["containers"][0]
    argv = c.command("worker")
    assert argv == c.image_cmd("worker") == c.k8s_argv(container) == WORKER_ARGV
    assert argv[argv.index("--concurrency") + 1] == "1"


def test_worker_consumes_the_configured_queue(worker: dict[str, str]) -> None:
    """FDL_TRAINING_QUEUE, which the gateway sends to, not a queue fixed in the command."""
    result = run(
        [
            "celery",
            "--broker",
            worker["FDL_REDIS_URL"],
            "inspect",
            "active_queues",
            "--json",
            "--timeout",
            "10",
            "--destination",
            f"celery@{socket.gethostname()}",
        ],
        worker,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (queues,) = json.loads(result.stdout.strip().splitlines()[-1]).values()
    assert [q["name"] for q in queues] == [WORKER_QUEUE]


def test_worker_healthchecks_pass(worker: dict[str, str]) -> None:
    compose_check = run(c.healthcheck("worker"), worker)
    assert compose_check.returncode == 0, compose_check.stdout + compose_check.stderr
    container = c.k8s_pod("Deployment", "fdl-worker")["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        result = run(container[probe]["exec"]["command"], worker)
        assert result.returncode == 0, (probe, result.stdout + result.stderr)
        assert "pong" in result.stdout


@pytest.mark.parametrize("hostname", ["not-this-worker", ""])
def test_worker_healthchecks_ignore_the_hostname_variable(
    worker: dict[str, str], hostname: str
) -> None:
    container = c.k8s_pod("Deployment", "fdl-worker")["containers"][0]
    for argv in (c.image_healthcheck("worker"), container["readinessProbe"]["exec"]["command"]):
        result = run(argv, {**worker, "HOSTNAME": hostname})
        assert result.returncode == 0, result.stdout + result.stderr


def test_worker_healthcheck_fails_for_another_node(worker: dict[str, str]) -> None:
    argv = [a.replace("$(hostname)", "not-this-worker") for a in c.image_healthcheck("worker")]
    assert argv != c.image_healthcheck("worker")
    assert run(argv, worker).returncode != 0


def test_flower_command_serves_its_healthcheck(redis_url: str, logs_dir: Path) -> None:
    argv = c.command("flower")
    k8s = c.k8s_argv(c.k8s_pod("Deployment", "fdl-flower")["containers"][0])
    assert c.swap(k8s, "fdl-redis", "redis") == argv
    port = free_port()
    local = c.swap([a.replace("redis://redis:6379/0", redis_url) for a in argv], "5555", str(port))
    assert local != argv
    health = c.swap(c.healthcheck("flower"), "5555", str(port))
    c.check_serves_healthcheck("deploy-flower", local, health, logs_dir, 90)


def test_tensorboard_command_serves_its_healthcheck(tmp_path: Path, logs_dir: Path) -> None:
    argv = c.command("tensorboard")
    worker_env = c.environment("worker")
    logdir = f"{worker_env['FDL_VAR_DIR']}/tensorboard"
    assert logdir in argv, (
        "TensorBoard must read where the worker writes ($FDL_VAR_DIR/tensorboard)"
    )
    port = free_port()
    local = c.swap([a.replace(logdir, str(tmp_path)) for a in argv], "6006", str(port))
    health = c.swap(c.healthcheck("tensorboard"), "6006", str(port))
    c.check_serves_healthcheck("deploy-tensorboard", local, health, logs_dir, 120)
