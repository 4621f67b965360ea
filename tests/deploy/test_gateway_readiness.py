"""An outage of Redis and the model server leaves the gateway ready: its Kubernetes readiness
probe (and compose's healthcheck) keep passing while ``/readyz`` says they are down.

Redis (and the model server) are shared by every gateway replica: a readiness probe that failed
with them would take every gateway pod out of the Service at once, and classification, which
needs no Redis, would become unreachable through the Ingress. The gateway runs its compose
command and environment, as in tests/deploy/test_stack.py; Redis its container command.
"""

from __future__ import annotations

from pathlib import Path

from harness import containers as c
from harness.procs import Process, free_port, port_open, wait_for
from harness.procs import run_command as run
from tests.deploy.compose_redis import compose_redis


def probe(port: int, path: str) -> bool:
    """The kubelet's verdict on an httpGet probe of ``path`` (2xx/3xx), as fdl.healthcheck runs
    it in the containers."""
    result = run(["python", "-m", "fdl.healthcheck", f"http://127.0.0.1:{port}{path}"], timeout=15)
    return result.returncode == 0


def test_a_shared_dependency_outage_leaves_the_gateway_ready(
    tmp_path: Path, logs_dir: Path
) -> None:
    container = c.k8s_pod("Deployment", "fdl-gateway")["containers"][0]
    paths = {
        name: container[name]["httpGet"]["path"] for name in ("readinessProbe", "livenessProbe")
    }
    keys = tmp_path / "api-keys"
    keys.write_text(f"{c.TEST_API_KEY}\n")
    gateway_port, probe_port = free_port(), free_port()
    for folder in ("redis", "models"):
        (tmp_path / folder).mkdir()
    with compose_redis(tmp_path / "redis", logs_dir, "readiness-redis") as redis:
        env = {**c.image_env("gateway"), **c.environment("gateway")}
        env.pop("HOME", None)
        env.update(
            FDL_API_KEYS_FILE=str(keys),
            FDL_REDIS_URL=redis.url,
            FDL_MODEL_DIR=str(tmp_path / "models"),
            FDL_VAR_DIR=str(tmp_path / "var"),
            FDL_SERVING_HOST="127.0.0.1",
            FDL_SERVING_GRPC_PORT=str(free_port()),  # no model server: /readyz fails on it too
            FDL_GATEWAY_PORT=str(gateway_port),
            FDL_PROBE_PORT=str(probe_port),
        )
        gateway = Process("readiness-gateway", c.command("gateway"), logs_dir, env=env)
        try:
            wait_for(
                lambda: port_open(probe_port) and probe(probe_port, "/healthz"),
                120,
                "the gateway's probe port",
                check=gateway.ensure_alive,
            )
            redis.process.stop()  # the outage
            wait_for(lambda: not probe(probe_port, "/readyz"), 30, "/readyz to fail")
            for name, path in paths.items():
                assert probe(probe_port, path), f"{name} {path} fails in the outage"
            compose_probe_port = c.environment("gateway")["FDL_PROBE_PORT"]
            health = c.swap(c.healthcheck("gateway"), compose_probe_port, str(probe_port))
            assert run(health, timeout=15).returncode == 0, "compose's healthcheck fails"
            gateway.ensure_alive()
        finally:
            gateway.stop()
