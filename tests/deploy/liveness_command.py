"""The worker's liveness check as the manifests run it (deploy/k8s/base/worker.yaml's
livenessProbe, deploy/compose.yaml's healthcheck), run here against a local Redis."""

from __future__ import annotations

import subprocess
import time

from harness import containers as c
from harness.procs import run_command
from harness.redis import RestartableRedis

LIVENESS = c.k8s_pod("Deployment", "fdl-worker")["containers"][0]["livenessProbe"]
COMMANDS = {"k8s": LIVENESS["exec"]["command"], "compose": c.healthcheck("worker")}
# The kubelet gives up on a probe after this long (and counts a failure).
PROBE_TIMEOUT_S = float(LIVENESS["timeoutSeconds"])


def probe(
    redis_server: RestartableRedis,
    which: str,
    url: str | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The liveness command of ``which`` file, ``args`` added, with the worker's FDL_REDIS_URL
    (or ``url``); and its seconds."""
    started = time.monotonic()
    full_env = {"FDL_REDIS_URL": url or redis_server.url, **(env or {})}
    result = run_command([*COMMANDS[which], *args], full_env, timeout=PROBE_TIMEOUT_S + 30)
    return result, time.monotonic() - started
