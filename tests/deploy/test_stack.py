"""The compose stack's model-config init, model server and gateway, run outside containers.

Each process runs the exact command its container runs (read from deploy/compose.yaml, checked
equal to the Dockerfile's CMD and to the Kubernetes manifests), with container-only ports and
paths swapped for local ones. The model server is ``tensorflow_model_server`` when
``FDL_TFS_BINARY`` names one, else our compatible ``fdl-model-server`` with the same flags.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from deploy.lint.k8s_policy import K8S_ONLY_FLAGS
from harness import containers as c
from harness.procs import REPO_ROOT, VENV_BIN, Process, free_port, port_open, wait_for
from harness.procs import run_command as run
from serving.flags import parse_flags
from tests.deploy.compose_redis import compose_redis

SERVING_CONFIG = REPO_ROOT / "deploy" / "serving"
API_KEYS_SECRET = "/run/secrets/fdl_api_keys"


def model_server_argv(grpc_port: int, rest_port: int, models: Path) -> list[str]:
    argv = c.command("serving")
    assert argv[0] == "tensorflow_model_server"
    argv[0] = os.environ.get("FDL_TFS_BINARY") or str(VENV_BIN / "fdl-model-server")
    argv = c.swap(c.swap(argv, "8500", str(grpc_port)), "8501", str(rest_port))
    return [
        a.replace("=/models/", f"={models}/").replace("=/config/", f"={SERVING_CONFIG}/")
        for a in argv
    ]


def serving_healthcheck(rest_port: int) -> list[str]:
    return c.swap(c.healthcheck("serving"), "8501", str(rest_port))


@dataclass
class Stack:
    models: Path
    rest_port: int
    gateway_port: int
    probe_port: int  # the gateway's probe listener (FDL_PROBE_PORT)


@pytest.fixture(scope="module")
def stack_redis(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[str]:
    """The stack's Redis: its container command, requiring its password."""
    with compose_redis(tmp_path_factory.mktemp("redis"), logs_dir, "deploy-stack-redis") as server:
        yield server.url


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, stack_redis: str, logs_dir: Path
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    models, data, var = root / "models", root / "data", root / "var"
    # The admin keys in a file, where the compose secret puts them (FDL_API_KEYS_FILE).
    keys = root / "api-keys"
    keys.write_text(f"{c.TEST_API_KEY}\n")
    init = run(
        c.command("model-config"), {**c.environment("model-config"), "FDL_MODEL_DIR": str(models)}
    )
    assert init.returncode == 0, init.stderr
    grpc_port, rest_port, gateway_port = free_port(), free_port(), free_port()
    probe_port = free_port()
    serving = Process("deploy-serving", model_server_argv(grpc_port, rest_port, models), logs_dir)
    processes = [serving]
    try:
        wait_for(
            lambda: run(serving_healthcheck(rest_port), timeout=15).returncode == 0,
            180,
            "the model server's compose healthcheck",
            interval=0.5,
            check=serving.ensure_alive,
        )
        env = {**c.image_env("gateway"), **c.environment("gateway")}
        env.pop("HOME", None)
        assert env["FDL_API_KEYS_FILE"] == API_KEYS_SECRET and "FDL_API_KEYS" not in env
        env.update(
            FDL_API_KEYS_FILE=str(keys),
            FDL_REDIS_URL=stack_redis,
            FDL_MODEL_DIR=str(models),
            FDL_DATA_DIR=str(data),
            FDL_VAR_DIR=str(var),
            FDL_SERVING_HOST="127.0.0.1",
            FDL_SERVING_GRPC_PORT=str(grpc_port),
            FDL_SERVING_REST_PORT=str(rest_port),
            FDL_GATEWAY_PORT=str(gateway_port),
            FDL_PROBE_PORT=str(probe_port),
        )
        gateway = Process("deploy-gateway", c.command("gateway"), logs_dir, env=env)
        processes.append(gateway)
        wait_for(
            lambda: port_open(gateway_port) and port_open(probe_port),
            120,
            "the gateway and probe ports",
            check=gateway.ensure_alive,
        )
        yield Stack(models, rest_port, gateway_port, probe_port)
    finally:
        for process in reversed(processes):
            process.stop()


def test_model_config_init_matches_everywhere() -> None:
    argv = c.command("model-config")
    init = c.k8s_pod("Deployment", "fdl-serving")["initContainers"][0]
    assert c.k8s_argv(init) == argv
    assert init["image"].split(":")[0] == c.service("gateway")["image"].split(":")[0]


def test_model_config_init_writes_a_config_tf_serving_parses(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "mnist_mlp" / "1").mkdir(parents=True)
    result = run(
        c.command("model-config"), {**c.environment("model-config"), "FDL_MODEL_DIR": str(models)}
    )
    assert result.returncode == 0, result.stderr
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((models / "models.config").read_text(), config)
    entries = config.model_config_list.config
    assert [e.name for e in entries] == ["mnist_mlp"]
    assert entries[0].base_path == str((models / "mnist_mlp").resolve())


def test_serving_command_is_the_same_in_kubernetes() -> None:
    """Less TensorFlow's thread pools, which Kubernetes sizes to the pod's CPU limit."""
    container = c.k8s_pod("Deployment", "fdl-serving")["containers"][0]
    argv = [a for a in c.k8s_argv(container) if not a.startswith(K8S_ONLY_FLAGS)]
    assert argv == c.command("serving")


def test_serving_thread_pools_match_the_cpu_limit() -> None:
    """TensorFlow sizes each pool to the node's cores (0, the default), which the container sees
    whatever its CPU quota: 64 threads on a 64-core node for a limit of 4."""
    container = c.k8s_pod("Deployment", "fdl-serving")["containers"][0]
    limit = str(container["resources"]["limits"]["cpu"])
    cpus = math.ceil(int(limit[:-1]) / 1000) if limit.endswith("m") else math.ceil(float(limit))
    flags = parse_flags(c.k8s_argv(container)[1:])  # our server takes them as TF Serving does
    assert flags.tensorflow_intra_op_parallelism == cpus
    assert flags.tensorflow_inter_op_parallelism == cpus


def test_serving_healthcheck_passes_on_the_running_server(stack: Stack) -> None:
    result = run(serving_healthcheck(stack.rest_port))
    assert result.returncode == 0, result.stderr
    assert (stack.models / "models.config").exists()


def test_serving_healthcheck_fails_without_a_server() -> None:
    assert run(serving_healthcheck(free_port())).returncode != 0


def test_serving_healthcheck_fails_on_a_wrong_path(stack: Stack) -> None:
    argv = [
        a.replace("/monitoring/prometheus/metrics", "/no/such/path")
        for a in serving_healthcheck(stack.rest_port)
    ]
    assert run(argv).returncode != 0


def test_kubernetes_serving_probes_use_the_monitoring_path(stack: Stack) -> None:
    container = c.k8s_pod("Deployment", "fdl-serving")["containers"][0]
    monitoring = (SERVING_CONFIG / "monitoring.config").read_text()
    for probe in ("startupProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert f'path: "{path}"' in monitoring
        url = f"http://127.0.0.1:{stack.rest_port}{path}"
        assert run(["python", "-m", "fdl.healthcheck", url]).returncode == 0


def test_gateway_command_is_the_same_everywhere() -> None:
    container = c.k8s_pod("Deployment", "fdl-gateway")["containers"][0]
    assert c.command("gateway") == c.image_cmd("gateway") == c.k8s_argv(container)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FDL_GATEWAY_HOST"] == c.environment("gateway")["FDL_GATEWAY_HOST"] == "0.0.0.0"


def test_gateway_image_healthcheck_passes(stack: Stack) -> None:
    """On FDL_PROBE_PORT when it is set (not 0), else on FDL_GATEWAY_PORT."""
    argv = c.image_healthcheck("gateway")
    gateway = str(stack.gateway_port)
    for probe in ("", "0", str(stack.probe_port)):
        result = run(argv, {"FDL_GATEWAY_PORT": gateway, "FDL_PROBE_PORT": probe})
        assert result.returncode == 0, (probe, result.stderr)
    closed = run(argv, {"FDL_GATEWAY_PORT": str(free_port()), "FDL_PROBE_PORT": ""})
    assert closed.returncode == 1
    assert "unhealthy" in closed.stderr
    elsewhere = run(argv, {"FDL_GATEWAY_PORT": gateway, "FDL_PROBE_PORT": str(free_port())})
    assert elsewhere.returncode == 1


def test_gateway_compose_healthcheck_passes(stack: Stack) -> None:
    probe_port = c.environment("gateway")["FDL_PROBE_PORT"]
    argv = c.swap(c.healthcheck("gateway"), probe_port, str(stack.probe_port))
    assert argv != c.healthcheck("gateway")  # the probe port, not the gateway's
    result = run(argv)
    assert result.returncode == 0, result.stderr


def test_gateway_kubernetes_probes_pass(stack: Stack) -> None:
    """Liveness and readiness (both /healthz: tests/deploy/test_gateway_readiness.py), on the
    probe port."""
    container = c.k8s_pod("Deployment", "fdl-gateway")["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "probe"
        url = f"http://127.0.0.1:{stack.probe_port}{container[probe]['httpGet']['path']}"
        result = run(["python", "-m", "fdl.healthcheck", url])
        assert result.returncode == 0, (probe, result.stderr)


def test_gateway_prometheus_path_answers(stack: Stack) -> None:
    doc = next(
        d
        for d in c.k8s_docs()
        if d["metadata"]["name"] == "fdl-gateway" and d["kind"] == "Deployment"
    )
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    container = doc["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert annotations["prometheus.io/port"] == env["FDL_PROBE_PORT"]  # scraped there
    url = f"http://127.0.0.1:{stack.probe_port}{annotations['prometheus.io/path']}"
    assert run(["python", "-m", "fdl.healthcheck", url]).returncode == 0


def test_gateway_reads_the_admin_keys_from_the_compose_secret(stack: Stack) -> None:
    """The key in the secret's file is an admin key (its job list reads the password-protected
    Redis); no key, no list."""
    url = f"http://127.0.0.1:{stack.gateway_port}/v1/jobs"
    admin = httpx.get(url, headers={"Authorization": f"Bearer {c.TEST_API_KEY}"}, timeout=10)
    assert admin.status_code == 200, admin.text
    assert httpx.get(url, timeout=10).status_code == 401
