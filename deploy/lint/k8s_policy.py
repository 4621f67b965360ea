"""What every pod must have here, and that the objects refer to each other correctly."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deploy.lint.common import COMPOSE_FILES, Errors, load_compose

Doc = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
_PINNED = re.compile(r":[A-Za-z0-9_.-]*\d[A-Za-z0-9_.-]*$")
REQUIRED = [
    ("Namespace", None),
    ("StatefulSet", "fdl-redis"),
    ("Deployment", "fdl-serving"),
    ("Deployment", "fdl-gateway"),
    ("Deployment", "fdl-worker"),
    ("Service", "fdl-serving"),
    ("Service", "fdl-gateway"),
    ("HorizontalPodAutoscaler", "fdl-serving"),
    ("HorizontalPodAutoscaler", "fdl-gateway"),
    ("Ingress", "fdl-gateway"),
    ("Secret", "fdl-api-keys"),
    ("PersistentVolumeClaim", "fdl-models"),
    ("NetworkPolicy", "fdl-serving"),
    ("NetworkPolicy", "fdl-redis"),
    ("NetworkPolicy", "fdl-flower"),
    ("NetworkPolicy", "fdl-gateway"),
    ("PodDisruptionBudget", "fdl-serving"),
    ("PodDisruptionBudget", "fdl-gateway"),
]
NAME = "app.kubernetes.io/name"
# Pods that listen without authentication, or guard what matters most, and the only pods that may
# connect to them: the model server (one HandleReloadConfigRequest unloads every model; the
# workers write the model repository, which it polls, and never connect to it), Redis (the
# job store and the Celery broker; its password, deploy/lint/credentials.py, is the other guard)
# and Flower (port-forward only).
ISOLATED: dict[str, set[str]] = {
    "fdl-serving": {"fdl-gateway"},
    "fdl-redis": {"fdl-gateway", "fdl-worker", "fdl-flower"},
    "fdl-flower": set(),
}
# Every pod that declares a port must be selected by a NetworkPolicy that restricts ingress. The
# gateway's, fdl-gateway, admits every client to its public port (the Ingress controller's
# namespace differs per cluster) and only Prometheus to its probe port (deploy/lint/probes.py).


def names(docs: list[Doc], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d.get("kind") == kind}


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name), None)


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") not in WORKLOADS:
        return None
    return doc["spec"]["template"]["spec"]


def check_pod(label: str, spec: Doc) -> Errors:
    errors: Errors = []
    pod_ctx = spec.get("securityContext") or {}
    if pod_ctx.get("runAsNonRoot") is not True or not pod_ctx.get("runAsUser"):
        errors.append(f"{label}: pod securityContext needs runAsNonRoot and a non-zero runAsUser")
    if (pod_ctx.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        errors.append(f"{label}: pod securityContext needs seccompProfile RuntimeDefault")
    containers = [(c, False) for c in spec.get("containers") or []]
    containers += [(c, True) for c in spec.get("initContainers") or []]
    for container, init in containers:
        where = f"{label}/{container['name']}"
        ctx = container.get("securityContext") or {}
        if ctx.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{where}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            errors.append(f"{where}: must drop ALL capabilities")
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set((resources.get(part) or {}).keys()):
                errors.append(f"{where}: resources.{part} needs cpu and memory")
        image = container.get("image", "")
        if not _PINNED.search(image) or image.endswith(":latest"):
            errors.append(f"{where}: image {image!r} is not pinned to a version")
        ports = {p.get("name") for p in container.get("ports") or []}
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if probe is None:
                if not init and probe_name != "startupProbe":
                    errors.append(f"{where}: no {probe_name}")
                continue
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = (probe.get(handler) or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errors.append(f"{where}: {probe_name} uses unknown port name {port!r}")
    return errors


def check_references(docs: list[Doc]) -> Errors:
    errors: Errors = []
    configmaps, secrets = names(docs, "ConfigMap"), names(docs, "Secret")
    claims = names(docs, "PersistentVolumeClaim")
    pods = {d["metadata"]["name"]: d for d in docs if pod_spec(d) is not None}
    for name, doc in pods.items():
        spec = pod_spec(doc) or {}
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                errors.append(f"{name}: volume uses unknown claim {claim!r}")
            cm = (volume.get("configMap") or {}).get("name")
            if cm and cm not in configmaps:
                errors.append(f"{name}: volume uses unknown ConfigMap {cm!r}")
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for source in container.get("envFrom") or []:
                ref = (source.get("configMapRef") or {}).get("name")
                if ref and ref not in configmaps:
                    errors.append(f"{name}: envFrom unknown ConfigMap {ref!r}")
            for env in container.get("env") or []:
                ref = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if ref and ref not in secrets:
                    errors.append(f"{name}: env {env['name']} uses unknown Secret {ref!r}")
    for hpa in (d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        scaled = find(docs, target["kind"], target["name"])
        if scaled is None:
            errors.append(f"HPA {hpa['metadata']['name']}: no {target['kind']} {target['name']}")
        elif "replicas" in (scaled.get("spec") or {}):
            # Every `kubectl apply` would reset the count the HPA chose.
            errors.append(
                f"{target['kind']} {target['name']} sets spec.replicas, but HPA "
                f"{hpa['metadata']['name']} owns its count: drop replicas (minReplicas applies)"
            )
    for service in (d for d in docs if d.get("kind") == "Service"):
        selector = service["spec"].get("selector") or {}
        matching = [
            d
            for d in pods.values()
            if selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()
        ]
        if not matching:
            errors.append(f"Service {service['metadata']['name']}: selector matches no pods")
            continue
        ports = {
            p.get("name")
            for d in matching
            for c in pod_spec(d)["containers"]  # type: ignore[index]
            for p in c.get("ports") or []
        }
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in ports:
                errors.append(f"Service {service['metadata']['name']}: no pod port {target!r}")
    for ingress in (d for d in docs if d.get("kind") == "Ingress"):
        for rule in ingress["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = path["backend"]["service"]
                if find(docs, "Service", backend["name"]) is None:
                    errors.append(f"Ingress: unknown Service {backend['name']!r}")
    return errors


# TF Serving's thread pools, sized to a pod's CPU limit (compose sets none): Kubernetes only.
K8S_ONLY_FLAGS = ("--tensorflow_intra_op_parallelism=", "--tensorflow_inter_op_parallelism=")


def check_matches_compose(docs: list[Doc], root: Path) -> Errors:
    """The cluster runs the same commands as the compose stack (one source of truth for each),
    less :data:`K8S_ONLY_FLAGS`."""
    services = load_compose(root / COMPOSE_FILES[0]).get("services") or {}
    errors: Errors = []
    pairs = [("fdl-serving", "serving"), ("fdl-gateway", "gateway"), ("fdl-worker", "worker")]
    for deployment, service in pairs:
        doc = find(docs, "Deployment", deployment)
        if doc is None or service not in services:
            continue
        container = pod_spec(doc)["containers"][0]  # type: ignore[index]
        k8s_argv = list(container.get("command") or []) + list(container.get("args") or [])
        k8s_argv = [a for a in k8s_argv if not str(a).startswith(K8S_ONLY_FLAGS)]
        svc = services[service]
        compose_argv = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
        if k8s_argv != compose_argv:
            errors.append(f"{deployment} runs {k8s_argv}, compose {service} runs {compose_argv}")
    return errors


def check_all(docs: list[Doc], root: Path) -> Errors:
    errors: Errors = []
    for kind, name in REQUIRED:
        if (name is None and not names(docs, kind)) or (name and find(docs, kind, name) is None):
            errors.append(f"missing {kind} {name or ''}".rstrip())
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            errors += check_pod(f"{doc['kind']} {doc['metadata']['name']}", spec)
    redis = find(docs, "StatefulSet", "fdl-redis")
    if redis is not None and not redis["spec"].get("volumeClaimTemplates"):
        errors.append("StatefulSet fdl-redis: no volumeClaimTemplates (Redis would lose its data)")
    models = find(docs, "PersistentVolumeClaim", "fdl-models")
    if models is not None and "ReadWriteMany" not in models["spec"].get("accessModes", []):
        errors.append("PersistentVolumeClaim fdl-models must be ReadWriteMany (workers + serving)")
    errors += check_network_policies(docs)
    return errors + check_references(docs) + check_matches_compose(docs, root)


def pod_labels(doc: Doc) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"].get("labels") or {}


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A label selector with matchLabels only (what these manifests write) matches ``labels``;
    one with matchExpressions is not understood here and counts as no match."""
    selector = selector or {}
    if selector.get("matchExpressions"):
        return False
    return (selector.get("matchLabels") or {}).items() <= labels.items()


def restricts_ingress(policy: Doc) -> bool:
    """Without policyTypes a NetworkPolicy always restricts ingress (and egress if it has rules)."""
    return "Ingress" in (policy["spec"].get("policyTypes") or ["Ingress"])


def check_network_policies(docs: list[Doc]) -> Errors:
    """Every pod that listens is isolated by an ingress NetworkPolicy; the
    pods of ISOLATED admit exactly their named clients, on ports they have; no policy touches
    egress (DNS and every way out stay open)."""
    errors: Errors = []
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    for policy in policies:
        spec = policy["spec"]
        if "Egress" in (spec.get("policyTypes") or []) or "egress" in spec:
            errors.append(
                f"NetworkPolicy {policy['metadata']['name']} restricts egress: the policies here "
                "are ingress-only (an egress rule set would cut DNS and Redis for its pods)"
            )
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        name, labels = doc["metadata"]["name"], pod_labels(doc)
        ports = {
            p.get("name") or p["containerPort"]
            for c in pod_spec(doc)["containers"]  # type: ignore[index]
            for p in c.get("ports") or []
        }
        selecting = [
            p
            for p in policies
            if restricts_ingress(p) and selects(p["spec"].get("podSelector"), labels)
        ]
        if ports and not selecting:
            errors.append(
                f"{doc['kind']} {name} listens on {sorted(map(str, ports))} and no NetworkPolicy "
                "restricts its ingress (every pod of the cluster could connect)"
            )
        if name in ISOLATED and selecting:
            errors += _admitted_clients(name, selecting, ports, ISOLATED[name])
    return errors


def _admitted_clients(name: str, policies: list[Doc], ports: set[Any], clients: set[str]) -> Errors:
    """The pods the ingress rules of ``policies`` (all selecting ``name``'s pods) admit are the
    pods named ``clients`` of this namespace, on ports ``name``'s pods have."""
    allowed: set[str] = set()
    names = ", ".join(p["metadata"]["name"] for p in policies)
    for policy in policies:
        label = f"NetworkPolicy {policy['metadata']['name']}"
        for rule in policy["spec"].get("ingress") or []:
            for peer in rule.get("from") or [{}]:
                selector = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if set(peer) != {"podSelector"} or set(selector) != {NAME}:
                    return [f"{label} admits more than named pods to {name}: {peer}"]
                allowed.add(selector[NAME])
            for port in rule.get("ports") or []:
                if port.get("port") not in ports:
                    return [f"{label}: port {port.get('port')!r} is not a port of the {name} pods"]
    if allowed != clients:
        return [f"NetworkPolicy {names} admits {sorted(allowed)} to {name}, not {sorted(clients)}"]
    return []


def check_gpu_worker(docs: list[Doc]) -> Errors:
    worker = find(docs, "Deployment", "fdl-worker")
    if worker is None:
        return ["no Deployment fdl-worker"]
    spec = worker["spec"]["template"]["spec"]
    errors: Errors = []
    limits = (spec["containers"][0].get("resources") or {}).get("limits") or {}
    if int(limits.get("nvidia.com/gpu", 0)) < 1:
        errors.append("fdl-worker has no nvidia.com/gpu limit")
    if not spec.get("nodeSelector"):
        errors.append("fdl-worker has no nodeSelector for GPU nodes")
    if not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations") or []):
        errors.append("fdl-worker does not tolerate the nvidia.com/gpu taint")
    return errors
