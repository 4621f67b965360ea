"""The Redis of compose, Kubernetes and `fdl up` persists with its append-only file alone (``--save
''``): a background snapshot that fails (a full disk; an operator's BGSAVE for a backup) leaves
writes on. With Redis's defaults (snapshots on, ``stop-writes-on-bgsave-error yes``), the same
failure had Redis refuse every write (``MISCONF``), and every job write with it, until a
snapshot succeeded again."""

from __future__ import annotations

from pathlib import Path

import redis

from harness import containers as c
from harness.procs import run_command as run
from harness.redis import RestartableRedis
from tests.chaos.redis_refusals import fail_a_snapshot, refused
from tests.deploy.compose_redis import compose_redis


def takes_writes_after_a_failed_snapshot(client: redis.Redis, pid: int) -> None:
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "yes"}  # the durability kept
    fail_a_snapshot(client, pid)
    assert not refused(client)


def test_the_compose_and_kubernetes_redis_takes_writes_after_a_failed_snapshot(
    tmp_path: Path, logs_dir: Path
) -> None:
    # The Kubernetes StatefulSet runs the same command (tests/deploy/test_services.py).
    with compose_redis(tmp_path, logs_dir, "deploy-redis-snapshot") as server:
        client = redis.Redis(port=server.port, password=server.password)
        takes_writes_after_a_failed_snapshot(client, server.process.pid)
        client.close()


def test_the_redis_of_fdl_up_takes_writes_after_a_failed_snapshot(
    tmp_path: Path, logs_dir: Path
) -> None:
    server = RestartableRedis(tmp_path / "redis", logs_dir)  # fdl.redis_server's command
    server.start()
    try:
        assert server.process is not None
        client = redis.Redis(port=server.port)
        takes_writes_after_a_failed_snapshot(client, server.process.pid)
        client.close()
    finally:
        server.stop()


def test_the_kubernetes_probes_keep_a_redis_that_refuses_writes_for_a_full_disk(
    tmp_path: Path, logs_dir: Path
) -> None:
    """A full disk makes Redis refuse writes, and PING with them (``MISCONF``): a liveness probe
    that failed on it restarted Redis every 30 s (a restart frees no space) and a readiness probe
    took it out of the Service, failing the reads that still work; job writes wait and go on."""
    pod = c.k8s_pod("StatefulSet", "fdl-redis")["containers"][0]
    probes = [pod[p]["exec"]["command"] for p in ("livenessProbe", "readinessProbe")]
    probes.append(c.healthcheck("redis"))
    with compose_redis(tmp_path, logs_dir, "deploy-redis-misconf") as server:
        local = [[a.replace("redis-cli ping", f"redis-cli -p {server.port} ping") for a in probe]
                 for probe in probes]  # fmt: skip
        auth = {"REDISCLI_AUTH": server.password}
        client = redis.Redis(port=server.port, password=server.password)
        client.config_set("save", "3600 1")  # Redis's default, so that a failed snapshot refuses
        client.config_set("stop-writes-on-bgsave-error", "yes")
        fail_a_snapshot(client, server.process.pid)
        assert refused(client)
        ping = run(["redis-cli", "-p", str(server.port), "ping"], auth)
        assert ping.stdout.startswith("MISCONF"), ping.stdout  # what the probes now accept
        for probe in local:
            assert run(probe, auth).returncode == 0, probe
        client.config_set("save", "")
        client.close()
