"""The worker's liveness check (the Kubernetes livenessProbe, the compose healthcheck) runs
``fdl-worker-probe`` (training/probe.py), as its own program, and within the check's timeout.

Celery's plain ``inspect ping`` fails while Redis is away, so an outage of Redis, shared by every
worker, restarted them all and killed their running jobs (which pause and go on once Redis is
back), and a restart cannot mend Redis. The probe fails only when Redis answers and the worker
does not; it is run as an argv with ``fdl-worker-probe`` first (an exec probe's ``command``, a
compose ``["CMD", ...]``), never through a shell, where ``|| true``, ``; exit 0`` or ``echo``
would make a check that cannot fail. It ends within ``--timeout + 2 * --redis-timeout + 2`` s
(:func:`training.probe.bound_s`) after Python's start-up, for which :data:`START_UP_S` is
allowed: more than the check's timeout, and the kubelet would count a probe that passes for a
Redis outage as a failure.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, find, pod_spec
from training.probe import PROG, bound_s, parser

WORKER = "fdl-worker"
# Seconds allowed for Python's start-up and imports before the probe's deadline starts.
START_UP_S = 5.0
# Kubernetes' default timeoutSeconds; compose's default healthcheck timeout.
K8S_DEFAULT_TIMEOUT_S, COMPOSE_DEFAULT_TIMEOUT_S = 1.0, 30.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def compose_seconds(value: Any) -> float | None:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds; None when it is none."""
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def probe_errors(where: str, argv: Any, timeout_s: float | None, timeout_key: str) -> Errors:
    """``argv`` (the check's command, its program first) runs the probe, and within
    ``timeout_s``, the check's ``timeout_key``."""
    if not isinstance(argv, list) or not argv or str(argv[0]) != PROG:
        return [
            f"{where} must run {PROG} (training/probe.py) as its own argv, {PROG} first (no "
            f"shell, whose `|| true` or `; exit 0` would hide a failure), not {argv!r}: a plain "
            "`celery inspect ping` fails while Redis is away, and every worker would be "
            "restarted, killing the running jobs that pause until Redis is back"
        ]
    try:
        args, unknown = parser(exit_on_error=False).parse_known_args([str(a) for a in argv[1:]])
    except argparse.ArgumentError as error:
        return [f"{where}: {PROG}: {error}"]
    if unknown:
        return [f"{where}: {PROG}: unknown arguments {unknown!r}"]
    if timeout_s is None:
        return [f"{where}: {timeout_key} is not a duration"]
    worst = bound_s(args.timeout, args.redis_timeout) + START_UP_S
    if worst > timeout_s:
        return [
            f"{where}: {PROG} may take {worst:g} s (--timeout {args.timeout:g} + 2 x "
            f"--redis-timeout {args.redis_timeout:g} + 2, and {START_UP_S:g} s of start-up), "
            f"more than its {timeout_key} of {timeout_s:g} s: a probe cut short counts as a "
            "failure, even one that would have passed for a Redis outage"
        ]
    return []


def check_k8s(docs: list[Doc]) -> Errors:
    """The worker Deployment's livenessProbe (its readiness may ping plainly)."""
    doc = find(docs, "Deployment", WORKER)
    if doc is None:
        return []  # k8s_policy reports a missing worker
    container = (pod_spec(doc) or {})["containers"][0]
    liveness = container.get("livenessProbe") or {}
    command = (liveness.get("exec") or {}).get("command")
    timeout = liveness.get("timeoutSeconds", K8S_DEFAULT_TIMEOUT_S)
    where = f"Deployment {WORKER}/{container['name']}: livenessProbe"
    return probe_errors(where, command, float(timeout), "timeoutSeconds")


def check_compose(project: dict[str, Any], label: str) -> Errors:
    """The compose worker's healthcheck: ``["CMD", "fdl-worker-probe", ...]``."""
    worker = (project.get("services") or {}).get("worker")
    if worker is None:
        return []
    healthcheck = worker.get("healthcheck") or {}
    test = healthcheck.get("test")
    argv = test[1:] if isinstance(test, list) and test[:1] == ["CMD"] else test
    timeout = compose_seconds(healthcheck.get("timeout", f"{COMPOSE_DEFAULT_TIMEOUT_S:g}s"))
    return probe_errors(f"{label}: worker healthcheck", argv, timeout, "timeout")
