"""The gateway's probe port (FDL_PROBE_PORT, api/probe.py) in the manifests: the kubelet's probes,
Prometheus and the container health checks use it, and nothing publishes it.

Idle connections can fill the gateway's public port (FDL_MAX_CONNECTIONS); probes sent there
would then fail and restart every gateway pod. The probe port has a small connection cap of its
own and is meant for the cluster's own clients only, never for a Service, an Ingress or a
published port, and the NetworkPolicy fdl-gateway admits only Prometheus to it.

Readiness uses ``/healthz``, never ``/readyz``: ``/readyz`` fails while Redis or the model server
is unreachable, and both are shared by every gateway replica, so an outage of either would take
every gateway pod out of the Service at once, classification (which needs no Redis) included.
``/readyz`` is for monitoring (docs/deploy.md, What to monitor).

The worker's liveness check (Kubernetes livenessProbe, the compose healthcheck) runs
``fdl-worker-probe``, never Celery's plain ``inspect ping``: deploy/lint/worker_probe.py.

A value these files cannot tell (FDL_PROBE_PORT from a Secret or a ConfigMap defined elsewhere, a
compose variable without a default) skips the checks that need it, with a note (:func:`notes`).
"""

from __future__ import annotations

import re
from typing import Any

from deploy.lint import worker_probe
from deploy.lint.common import Errors
from deploy.lint.k8s_policy import Doc, find, pod_labels, pod_spec, restricts_ingress, selects

GATEWAY = "fdl-gateway"
PORT_NAME = "probe"
PUBLIC_PORT_NAME = "http"
PROBES = ("livenessProbe", "readinessProbe")
# Paths that fail when a dependency every replica shares is down (Redis, the model server).
SHARED_DEPENDENCY_PATHS = ("/readyz",)
# ``${VAR:-default}`` or ``${VAR-default}``: the default (the value without an env file).
_COMPOSE_DEFAULT = re.compile(r"\$\{\w+:?-([^}]*)\}")
_notes: list[str] = []


def notes() -> list[str]:
    """The notes of the checks run since the last call (checks skipped, and why), once each."""
    taken = list(dict.fromkeys(_notes))
    _notes.clear()
    return taken


def _probe_port(env: dict[str, Any], where: str) -> tuple[int | None, Errors]:
    """FDL_PROBE_PORT of ``env`` as a port number, or an error saying why it is none."""
    value = str(env.get("FDL_PROBE_PORT", "")).strip()
    if not value.isdigit() or int(value) == 0:
        return None, [
            f"{where}: FDL_PROBE_PORT is not set to a port: its probes would share the public "
            "port, which a flood of idle connections fills"
        ]
    port = int(value)
    if str(port) == str(env.get("FDL_GATEWAY_PORT", "")).strip():
        return None, [f"{where}: FDL_PROBE_PORT equals FDL_GATEWAY_PORT"]
    return port, []


def check_k8s(docs: list[Doc]) -> Errors:
    """The gateway's probes (:func:`check_gateway_k8s`) and the worker's liveness."""
    return check_gateway_k8s(docs) + worker_probe.check_k8s(docs)


def check_gateway_k8s(docs: list[Doc]) -> Errors:
    """The gateway's pods set FDL_PROBE_PORT, name it ``probe``, point liveness and readiness
    (and the Prometheus scrape annotation) at it, and no Service exposes it."""
    doc = find(docs, "Deployment", GATEWAY)
    if doc is None:
        return []  # k8s_policy reports a missing gateway
    container = (pod_spec(doc) or {})["containers"][0]
    where = f"Deployment {GATEWAY}/{container['name']}"
    env = _k8s_env(container, docs)
    if env.get("FDL_PROBE_PORT", "") is None:
        _notes.append(
            f"{where}: FDL_PROBE_PORT comes from a source these manifests do not hold: its probe "
            "port checks were skipped"
        )
        return []
    port, errors = _probe_port(env, where)
    if port is None:
        return errors
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    if ports.get(PORT_NAME) != port:
        errors.append(f"{where}: no container port named {PORT_NAME!r} with FDL_PROBE_PORT {port}")
    for probe in PROBES:
        target = ((container.get(probe) or {}).get("httpGet") or {}).get("port")
        if target not in (PORT_NAME, port):
            errors.append(f"{where}: {probe} must use port {PORT_NAME!r}, not {target!r}")
        path = ((container.get(probe) or {}).get("httpGet") or {}).get("path", "")
        if str(path).split("?")[0] in SHARED_DEPENDENCY_PATHS:
            errors.append(
                f"{where}: {probe} uses {path}, which fails while Redis or the model server is "
                "down: they are shared by every replica, so an outage would take every gateway "
                "pod out of service at once (use /healthz; /readyz is for monitoring)"
            )
    annotations = doc["spec"]["template"]["metadata"].get("annotations") or {}
    scraped = annotations.get("prometheus.io/port")
    if scraped is not None and str(scraped) != str(port):
        errors.append(
            f"{where}: prometheus.io/port is {scraped}, not the probe port {port}: a flood on "
            "the public port would stop the scrapes"
        )
    labels = pod_labels(doc)
    for service in (d for d in docs if d.get("kind") == "Service"):
        if not selects({"matchLabels": service["spec"].get("selector") or {}}, labels):
            continue
        for entry in service["spec"].get("ports") or []:
            if entry.get("targetPort", entry.get("port")) in (PORT_NAME, port):
                errors.append(
                    f"Service {service['metadata']['name']} exposes the gateway's probe port: "
                    "it is for the kubelet and Prometheus only"
                )
    return errors + check_policy(docs, labels, port, ports.get(PUBLIC_PORT_NAME))


def _configmap(docs: list[Doc], name: str | None) -> dict[str, Any] | None:
    found = find(docs, "ConfigMap", name) if name else None
    return None if found is None else (found.get("data") or {})


def _k8s_env(container: Doc, docs: list[Doc]) -> dict[str, str | None]:
    """The container's variables as far as ``docs`` tell them (a value, or a key of one of their
    ConfigMaps); None for one they do not (a Secret, a field, a ConfigMap defined elsewhere). A
    variable an unresolved envFrom may set maps to None, unless ``env`` sets it (which wins)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        data = _configmap(docs, (source.get("configMapRef") or {}).get("name"))
        if data is None:  # a Secret, or a ConfigMap elsewhere: it may set FDL_PROBE_PORT
            env.setdefault("FDL_PROBE_PORT", None)
            continue
        env.update({f"{prefix}{key}": str(value) for key, value in data.items()})
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = (entry.get("valueFrom") or {}).get("configMapKeyRef") or {}
        data = _configmap(docs, ref.get("name"))
        value = None if data is None else data.get(ref.get("key"))
        env[entry["name"]] = None if value is None else str(value)
    return env


def _covers(rule: Doc, port: int) -> bool:
    """An ingress rule admits connections to the probe port (named or numbered, or all ports)."""
    entries = rule.get("ports") or []
    for entry in entries:
        target = entry.get("port")
        if target is None or target in (PORT_NAME, port, str(port)):
            return True
        if isinstance(target, int) and target <= port <= entry.get("endPort", target):
            return True
    return not entries


def _any_client(peer: Doc) -> bool:
    """A peer that stands for every pod (or address): no selector that narrows it."""
    if "ipBlock" in peer:
        return str(peer["ipBlock"].get("cidr", "")).endswith("/0")
    selectors = [peer.get("namespaceSelector"), peer.get("podSelector")]
    return not any(s.get("matchLabels") or s.get("matchExpressions") for s in selectors if s)


def check_policy(
    docs: list[Doc], labels: dict[str, str], port: int, public_port: int | None
) -> Errors:
    """The NetworkPolicies of the gateway's pods admit some client to the public port, and only
    selected pods (Prometheus) to the probe port: a rule without ``from``, or a peer with no
    narrowing selector, on that port lets every pod of the cluster hold its connection cap and
    fail every liveness probe. A missing policy is k8s_policy's error."""
    policies = [
        d
        for d in docs
        if d.get("kind") == "NetworkPolicy"
        and restricts_ingress(d)
        and selects(d["spec"].get("podSelector"), labels)
    ]
    if not policies:
        return []
    names = ", ".join(p["metadata"]["name"] for p in policies)
    rules = [rule for p in policies for rule in p["spec"].get("ingress") or []]
    errors: Errors = []
    for rule in rules:
        peers = rule.get("from") or [{}]
        if _covers(rule, port) and any(_any_client(peer) for peer in peers):
            errors.append(
                f"NetworkPolicy {names} admits every client to the gateway's probe port {port}: "
                "any pod could hold its 32 connections and fail the liveness probes (admit only "
                "your monitoring namespace's Prometheus)"
            )
            break
    public = (PUBLIC_PORT_NAME, public_port, str(public_port))
    if not any(
        not r.get("ports") or any(p.get("port") in public for p in r["ports"]) for r in rules
    ):
        errors.append(
            f"NetworkPolicy {names} admits nobody to the gateway's port {PUBLIC_PORT_NAME!r}: the "
            "Ingress controller could not reach it"
        )
    return errors


def _compose_value(value: Any) -> str | None:
    """A compose value without an env file: ``${VAR:-default}`` is its default; None for one
    that still names a variable."""
    text = _COMPOSE_DEFAULT.sub(lambda m: m.group(1), str(value))
    return None if "$" in text.replace("$$", "") else text.replace("$$", "$")


def _published_targets(service: dict[str, Any]) -> set[str]:
    """The container ports a compose service publishes, as strings."""
    targets = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            targets.add(str(entry.get("target", "")))
        else:
            targets.add(str(entry).split("/")[0].rsplit(":", 1)[-1])
    return targets


def check_compose(project: dict[str, Any], label: str) -> Errors:
    """The gateway's healthcheck (:func:`check_gateway_compose`) and the worker's."""
    return check_gateway_compose(project, label) + worker_probe.check_compose(project, label)


def check_gateway_compose(project: dict[str, Any], label: str) -> Errors:
    """The compose gateway sets FDL_PROBE_PORT, its healthcheck uses it, and it is unpublished."""
    service = (project.get("services") or {}).get("gateway")
    if service is None:
        return []
    where = f"{label}: gateway"
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(str(item).partition("=")[::2] for item in env)
    env = {name: _compose_value(value) for name, value in env.items() if value is not None}
    if env.get("FDL_PROBE_PORT", "") is None:
        _notes.append(f"{where}: FDL_PROBE_PORT names a variable without a default: not checked")
        return []
    port, errors = _probe_port(env, where)
    if port is None:
        return errors
    test = (service.get("healthcheck") or {}).get("test") or []
    text = test if isinstance(test, str) else " ".join(str(a) for a in test)
    asks_env = "fdl.healthcheck" in text and "--from-env" in text  # FDL_PROBE_PORT itself
    if not asks_env and not re.search(rf":{port}(?!\d)", text):
        errors.append(f"{where}: the healthcheck must use the probe port {port}: {text!r}")
    if any(path in text for path in SHARED_DEPENDENCY_PATHS):
        errors.append(
            f"{where}: the healthcheck must not use /readyz: a Redis or model-server outage "
            "would mark the gateway unhealthy though it still classifies (use /healthz)"
        )
    if str(port) in _published_targets(service):
        errors.append(f"{where}: publishes the probe port {port}")
    return errors


def check_dockerfile_healthcheck(argv: list[str] | None) -> Errors:
    """The gateway image's HEALTHCHECK follows FDL_PROBE_PORT where it is set: ``python -m
    fdl.healthcheck --from-env``, which reads the ports as the gateway's settings do (a shell
    comparing strings would probe port "00" or "8081.0")."""
    if argv is not None and not {"fdl.healthcheck", "--from-env"} <= set(argv):
        return [
            "Dockerfile: the gateway's HEALTHCHECK must run `python -m fdl.healthcheck "
            "--from-env /healthz` (FDL_PROBE_PORT when it is set, read as the settings read it)"
        ]
    return []
