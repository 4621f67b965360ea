"""Redis, the training worker, Flower and TensorBoard: their container commands, run here."""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from fdl.stack import WORKER_ARGV
from harness import containers as c
from harness.procs import REPO_ROOT, Process, free_port, wait_for
from harness.procs import run_command as run
from tests.deploy.compose_redis import compose_redis, redis_argv
from training.worker_main import worker_argv


def test_redis_command_persists_and_answers_its_healthcheck(tmp_path: Path, logs_dir: Path) -> None:
    argv = c.command("redis")
    statefulset = c.k8s_pod("StatefulSet", "fdl-redis")["containers"][0]
    assert c.k8s_argv(statefulset) == argv
    health = c.healthcheck("redis")
    assert statefulset["readinessProbe"]["exec"]["command"][1:] == health[1:]
    # Liveness also accepts LOADING (a large append-only file being read): checked here on PONG.
    liveness = statefulset["livenessProbe"]["exec"]["command"]
    assert "/data" in argv[-1]
    with compose_redis(tmp_path, logs_dir, "deploy-redis") as server:
        local_health, local_liveness = (
            [a.replace("redis-cli ping", f"redis-cli -p {server.port} ping") for a in probe]
            for probe in (health, liveness)
        )
        assert local_health != health and local_liveness != liveness
        # The probes pass with the pod's REDISCLI_AUTH, and only with it.
        for auth in (server.password, "", f"not-{server.password}"):
            for probe in (local_health, local_liveness):
                passed = run(probe, {"REDISCLI_AUTH": auth}).returncode == 0
                assert passed == (auth == server.password), (probe, auth != "")
        for password in (None, f"not-{server.password}"):
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=server.port, password=password).ping()
        client = redis.Redis(port=server.port, password=server.password)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("job:1", "queued")
        client.close()
        wait_for(lambda: any(tmp_path.rglob("*.aof")), 10, "the append-only file")
    with_password = {"REDISCLI_AUTH": server.password}
    assert run(local_health, with_password).returncode != 0
    assert run(local_liveness, with_password).returncode != 0
    assert server.password not in server.process.log_tail(1_000_000)


@pytest.mark.parametrize(
    "password",
    [
        "",
        "replace-me-with-a-long-random-password",
        "0123456789abcde",
        "0123456789abcdef and more",
        "0123456789abcdef@redis/0",
    ],
    ids=["unset", "placeholder", "short", "space", "url-unsafe"],
)
def test_redis_command_refuses_a_weak_password(tmp_path: Path, password: str) -> None:
    """It exits before redis-server starts, naming the rule, never the password."""
    result = run(redis_argv(tmp_path, free_port()), {"REDISCLI_AUTH": password}, timeout=20)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "redis: refusing to start" in result.stderr
    assert not password or password not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """The URL of a Redis that requires its password, as the stack's does."""
    data = tmp_path_factory.mktemp("protected-redis")
    with compose_redis(data, logs_dir, "deploy-redis-protected") as server:
        yield server.url


WORKER_QUEUE = "deploy-test-queue"


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, protected_redis: str, logs_dir: Path
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("worker")
    env = {**c.image_env("worker"), **c.environment("worker")}
    env.pop("HOME", None)
    env.update(
        FDL_REDIS_URL=protected_redis,
        FDL_MODEL_DIR=str(root / "models"),
        FDL_DATA_DIR=str(root / "data"),
        FDL_VAR_DIR=str(root / "var"),
        FDL_CHECKPOINT_DIR=str(root / "checkpoints"),
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
    # fdl-worker: Celery's worker with our app object, never `celery -A training.tasks` (which
    # imports a training.py of the working folder), one job at a time.
    assert argv == ["fdl-worker"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fdl-worker"] == "training.worker_main:main"  # the image installs it
    assert worker_argv([]) == [
        "worker",
        "--concurrency",
        "1",
        "--prefetch-multiplier",
        "1",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def test_worker_consumes_the_configured_queue(worker: dict[str, str]) -> None:
    """FDL_TRAINING_QUEUE, which the gateway sends to, not a queue fixed in the command."""
    result = run(
        [
            "celery",
            "inspect",
            "active_queues",
            "--json",
            "--timeout",
            "10",
            "--destination",
            f"celery@{socket.gethostname()}",
        ],
        {**worker, "CELERY_BROKER_URL": worker["FDL_REDIS_URL"]},
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


def test_redis_clients_share_one_url() -> None:
    """The gateway, the worker and Flower connect with one URL (compose: one variable; Kubernetes:
    the Secret Redis reads its password from, expanded in each pod), Flower in CELERY_BROKER_URL."""
    compose_url = c.environment("flower")["CELERY_BROKER_URL"]
    assert compose_url == c.environment("gateway")["FDL_REDIS_URL"]
    assert compose_url == c.environment("worker")["FDL_REDIS_URL"]
    password = c.COMPOSE_VARIABLES["FDL_REDIS_PASSWORD"]
    assert compose_url == f"redis://:{password}@redis:6379/0"
    assert c.environment("redis")["REDISCLI_AUTH"] == password
    urls = set()
    for deployment, variable in (
        ("fdl-gateway", "FDL_REDIS_URL"),
        ("fdl-worker", "FDL_REDIS_URL"),
        ("fdl-flower", "CELERY_BROKER_URL"),
    ):
        env = {e["name"]: e for e in c.k8s_pod("Deployment", deployment)["containers"][0]["env"]}
        urls.add(env[variable]["value"])
        assert env["REDIS_PASSWORD"]["valueFrom"] == redis_auth_source()
    assert urls == {"redis://:$(REDIS_PASSWORD)@fdl-redis:6379/0"}


def redis_auth_source() -> dict[str, object]:
    container = c.k8s_pod("StatefulSet", "fdl-redis")["containers"][0]
    (auth,) = [e for e in container["env"] if e["name"] == "REDISCLI_AUTH"]
    return dict(auth["valueFrom"])


def test_flower_command_serves_its_healthcheck(protected_redis: str, logs_dir: Path) -> None:
    argv = c.command("flower")
    assert c.k8s_argv(c.k8s_pod("Deployment", "fdl-flower")["containers"][0]) == argv
    port = free_port()
    local = c.swap(argv, "5555", str(port))
    assert local != argv
    health = c.swap(c.healthcheck("flower"), "5555", str(port))
    env = {"CELERY_BROKER_URL": protected_redis}
    process = Process("deploy-flower", local, logs_dir, env=env)
    try:
        wait_for(
            lambda: run(health, timeout=15).returncode == 0,
            90,
            "flower's healthcheck",
            interval=0.5,
            check=process.ensure_alive,
        )
    finally:
        process.stop()
    assert run(health, timeout=15).returncode != 0
    log = process.log_tail(1_000_000)
    # Flower took the broker from the environment and shows it with the password masked.
    assert f"Broker: redis://:**@127.0.0.1:{urlsplit(protected_redis).port}/0" in log
    assert str(urlsplit(protected_redis).password) not in log


def test_tensorboard_command_serves_its_healthcheck(tmp_path: Path, logs_dir: Path) -> None:
    """Here, with the dev venv's tensorboard; that the service's image has the command is
    tests/deploy/test_tensorboard_image.py's check."""
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
