"""How the model server's and the gateway's pods leave: a PodDisruptionBudget and a spread over
nodes for each Deployment an HPA scales, and a preStop pause within the grace period for the
servers many clients reach (what k8s_policy checks of every pod is there)."""

from __future__ import annotations

from typing import Any

from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, find, pod_labels, pod_spec, selects

# Seconds each server may take to stop after SIGTERM, which its pods' terminationGracePeriodSeconds
# must leave after the preStop pause: the gateway's probe listener (SHUTDOWN_S=3 in api/probe.py),
# then its uvicorn graceful shutdown (at most SHUTDOWN_GRACE_S=10 in api/settings.py;
# tests/deploy/test_lint.py keeps them equal) plus 5 s for the app's own shutdown; the model
# server: fdl-model-server's SHUTDOWN_DEADLINE_S (TF Serving exits at once).
SHUTDOWN_S = {"fdl-gateway": 3 + 10 + 5, "fdl-serving": 10}
DEFAULT_GRACE_S = 30


def check_disruptions(docs: list[Doc]) -> Errors:
    """Each Deployment an HPA scales spreads its pods over nodes and has a PodDisruptionBudget
    that lets a drain evict one pod at a time, never none (at the HPA's minReplicas)."""
    errors: Errors = []
    budgets = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for hpa in (d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        doc = find(docs, target["kind"], target["name"])
        if doc is None or pod_spec(doc) is None:
            continue  # check_references reports it
        label, labels = f"{target['kind']} {target['name']}", pod_labels(doc)
        least = int(hpa["spec"].get("minReplicas", 1))
        spread = pod_spec(doc).get("topologySpreadConstraints") or []  # type: ignore[union-attr]
        if not any(
            c.get("topologyKey") == "kubernetes.io/hostname"
            and selects(c.get("labelSelector"), labels)
            and (c.get("labelSelector") or {}).get("matchLabels")
            for c in spread
        ):
            errors.append(
                f"{label}: no topologySpreadConstraints by kubernetes.io/hostname for its pods "
                "(all its replicas may run on one node, and one drain takes them all)"
            )
        mine = [b for b in budgets if selects(b["spec"].get("selector"), labels)]
        if not mine:
            errors.append(
                f"{label} (HPA minReplicas {least}) has no PodDisruptionBudget: a drain may "
                "evict all its pods at once"
            )
        for budget in mine:
            evictable = _evictable(budget["spec"], least)
            if evictable is not None and evictable < 1:
                errors.append(
                    f"PodDisruptionBudget {budget['metadata']['name']} lets no pod of {label} "
                    f"be evicted at the HPA's minReplicas {least}: every node drain would hang"
                )
            elif evictable is not None and evictable >= least:
                errors.append(
                    f"PodDisruptionBudget {budget['metadata']['name']} lets a drain evict every "
                    f"pod of {label} at the HPA's minReplicas {least}"
                )
    return errors


def _evictable(spec: Doc, replicas: int) -> int | None:
    """How many of ``replicas`` pods the budget lets a drain evict at once (None: not known).
    Percentages are rounded up, as the disruption controller does for both fields."""

    def count(value: Any) -> int | None:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
            return -(-int(value[:-1]) * replicas // 100)
        return None

    if "maxUnavailable" in spec:
        return count(spec["maxUnavailable"])
    if "minAvailable" in spec:
        least = count(spec["minAvailable"])
        return None if least is None else replicas - least
    return None


def prestop_seconds(container: Doc) -> float | None:
    """The pause of a container's preStop hook: ``sleep N`` (exec) or the native sleep action."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in hook:
        return float(hook["sleep"].get("seconds", 0))
    command = (hook.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0] in ("sleep", "/bin/sleep", "/usr/bin/sleep"):
        try:
            return float(command[1])
        except ValueError:
            return None
    return None


def check_shutdown(docs: list[Doc]) -> Errors:
    """The servers behind a Service that many clients reach (SHUTDOWN_S) pause in a preStop hook
    until their pod has left the endpoints, and their grace period covers the pause plus their own
    shutdown."""
    errors: Errors = []
    for name, shutdown in SHUTDOWN_S.items():
        doc = find(docs, "Deployment", name)
        if doc is None:
            continue
        spec = pod_spec(doc) or {}
        container = spec["containers"][0]
        pause = prestop_seconds(container)
        label = f"Deployment {name}/{container['name']}"
        if pause is None or pause <= 0:
            errors.append(
                f"{label}: no preStop pause (e.g. exec sleep 5): it stops accepting on SIGTERM "
                "while the endpoints still route to it (errors during every rollout)"
            )
            continue
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        if grace < pause + shutdown:
            errors.append(
                f"{label}: terminationGracePeriodSeconds {grace} is less than its preStop pause "
                f"({pause:g} s) plus its own shutdown ({shutdown} s): it would be SIGKILLed"
            )
    return errors


def check_all(docs: list[Doc]) -> Errors:
    return check_disruptions(docs) + check_shutdown(docs)
