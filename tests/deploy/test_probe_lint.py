"""deploy/lint/probes.py on valid setups it once refused, and on the gateway's NetworkPolicy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deploy.lint import probes, worker_probe
from deploy.lint.common import Errors, load_compose, load_yaml_documents
from harness.procs import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s" / "base"
Doc = dict[str, Any]


def k8s_docs() -> list[Doc]:
    return [
        doc for name in ("gateway.yaml", "config.yaml") for doc in load_yaml_documents(K8S / name)
    ]


def env_entry(container: Doc, name: str) -> Doc:
    return next(e for e in container["env"] if e["name"] == name)


def policy(docs: list[Doc]) -> Doc:
    return next(d for d in docs if d["kind"] == "NetworkPolicy")


def compose_gateway() -> tuple[dict[str, Any], dict[str, Any]]:
    project = load_compose(REPO_ROOT / "deploy" / "compose.yaml")
    return project, project["services"]["gateway"]


@pytest.fixture(autouse=True)
def _no_notes_left() -> None:
    probes.notes()


def test_the_shipped_files_pass() -> None:
    assert probes.check_k8s(k8s_docs()) == []
    project, _ = compose_gateway()
    assert probes.check_compose(project, "compose.yaml") == []
    assert probes.notes() == []


@pytest.mark.parametrize(
    "test",
    [
        "python -m fdl.healthcheck http://127.0.0.1:8081/healthz",  # a plain string
        ["CMD-SHELL", "python -m fdl.healthcheck http://127.0.0.1:8081/healthz"],
        ["CMD", "python", "-m", "fdl.healthcheck", "http://127.0.0.1:8081"],  # no slash
        ["CMD", "python", "-m", "fdl.healthcheck", "--from-env", "/healthz"],
    ],
)
def test_compose_healthchecks_on_the_probe_port_pass(test: str | list[str]) -> None:
    project, service = compose_gateway()
    service["healthcheck"]["test"] = test
    assert probes.check_compose(project, "compose.yaml") == []


@pytest.mark.parametrize(
    "test",
    [
        "python -m fdl.healthcheck http://127.0.0.1:8000/healthz",
        ["CMD", "python", "-m", "fdl.healthcheck", "http://127.0.0.1:80810/"],
    ],
)
def test_compose_healthchecks_elsewhere_fail(test: str | list[str]) -> None:
    project, service = compose_gateway()
    service["healthcheck"]["test"] = test
    errors = probes.check_compose(project, "compose.yaml")
    assert any("the healthcheck must use the probe port 8081" in e for e in errors), errors


def test_compose_interpolation_defaults_are_read() -> None:
    project, service = compose_gateway()
    service["environment"]["FDL_PROBE_PORT"] = "${FDL_PROBE_PORT:-8081}"
    assert probes.check_compose(project, "compose.yaml") == []
    service["environment"]["FDL_PROBE_PORT"] = "${FDL_PROBE_PORT-8000}"
    errors = probes.check_compose(project, "compose.yaml")
    assert errors == ["compose.yaml: gateway: FDL_PROBE_PORT equals FDL_GATEWAY_PORT"]


def test_a_compose_variable_without_default_is_skipped_with_a_note() -> None:
    project, service = compose_gateway()
    service["environment"]["FDL_PROBE_PORT"] = "${FDL_PROBE_PORT}"
    assert probes.check_compose(project, "compose.yaml") == []
    assert probes.notes() == [
        "compose.yaml: gateway: FDL_PROBE_PORT names a variable without a default: not checked"
    ]


def _probe_port_from_configmap(docs: list[Doc], value: str) -> list[Doc]:
    """``docs`` with FDL_PROBE_PORT in the ConfigMap fdl-env (``value``) instead of the env."""
    docs = copy.deepcopy(docs)
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    container["env"] = [e for e in container["env"] if e["name"] != "FDL_PROBE_PORT"]
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "fdl-env"
    )
    configmap["data"]["FDL_PROBE_PORT"] = value
    return docs


def test_k8s_probe_port_from_envfrom_is_read() -> None:
    assert probes.check_k8s(_probe_port_from_configmap(k8s_docs(), "8081")) == []
    errors = probes.check_k8s(_probe_port_from_configmap(k8s_docs(), "0"))
    assert any("FDL_PROBE_PORT is not set to a port" in e for e in errors), errors


def test_k8s_probe_port_from_a_configmap_key_is_read() -> None:
    docs = _probe_port_from_configmap(k8s_docs(), "8081")
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    ref = {"configMapKeyRef": {"name": "fdl-env", "key": "FDL_PROBE_PORT"}}
    container["env"].append({"name": "FDL_PROBE_PORT", "valueFrom": ref})
    assert probes.check_k8s(docs) == []
    container["envFrom"] = []  # the ConfigMap is no longer the container's
    assert probes.check_k8s(docs) == []  # env's configMapKeyRef still reads it


@pytest.mark.parametrize(
    "source",
    [
        {"valueFrom": {"secretKeyRef": {"name": "fdl-ports", "key": "probe"}}},
        {"valueFrom": {"configMapKeyRef": {"name": "elsewhere", "key": "probe"}}},
    ],
)
def test_k8s_probe_port_from_elsewhere_is_skipped_with_a_note(source: Doc) -> None:
    docs = copy.deepcopy(k8s_docs())
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env_entry(container, "FDL_PROBE_PORT").pop("value")
    env_entry(container, "FDL_PROBE_PORT").update(source)
    assert probes.check_k8s(docs) == []
    assert probes.notes() == [
        "Deployment fdl-gateway/gateway: FDL_PROBE_PORT comes from a source these manifests do "
        "not hold: its probe port checks were skipped"
    ]


def test_k8s_envfrom_a_secret_may_set_the_probe_port() -> None:
    docs = _probe_port_from_configmap(k8s_docs(), "8081")
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]
    container["envFrom"] = [{"secretRef": {"name": "fdl-ports"}}]
    assert probes.check_k8s(docs) == []
    assert len(probes.notes()) == 1


@pytest.mark.parametrize(
    "peer",
    [
        {},
        {"namespaceSelector": {}},
        {"namespaceSelector": {}, "podSelector": {}},
        {"ipBlock": {"cidr": "0.0.0.0/0"}},
    ],
)
def test_a_policy_that_admits_everyone_to_the_probe_port_fails(peer: Doc) -> None:
    docs = k8s_docs()
    policy(docs)["spec"]["ingress"][1]["from"] = [peer]
    errors = probes.check_k8s(docs)
    assert any("admits every client to the gateway's probe port 8081" in e for e in errors)


@pytest.mark.parametrize(
    "ports", [None, [{"port": 8081}], [{"port": 8000, "endPort": 8090}], [{"protocol": "TCP"}]]
)
def test_an_open_rule_that_covers_the_probe_port_fails(ports: list[Doc] | None) -> None:
    docs = k8s_docs()
    rule = policy(docs)["spec"]["ingress"][0]
    if ports is None:
        rule.pop("ports")
    else:
        rule["ports"] = ports
    errors = probes.check_k8s(docs)
    assert any("admits every client to the gateway's probe port 8081" in e for e in errors)


def test_a_policy_that_admits_nobody_to_the_public_port_fails() -> None:
    docs = k8s_docs()
    policy(docs)["spec"]["ingress"].pop(0)
    assert probes.check_k8s(docs) == [
        "NetworkPolicy fdl-gateway admits nobody to the gateway's port 'http': the Ingress "
        "controller could not reach it"
    ]
    policy(docs)["spec"]["ingress"].append(
        {"from": [{"podSelector": {"matchLabels": {"a": "b"}}}], "ports": [{"port": 8000}]}
    )
    assert probes.check_k8s(docs) == []


def worker_liveness(command: Any = None, timeout_s: Any = None) -> list[Doc]:
    """deploy/k8s/base/worker.yaml with its liveness command and timeoutSeconds replaced (None:
    as shipped)."""
    docs = load_yaml_documents(K8S / "worker.yaml")
    liveness = docs[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    if command is not None:
        liveness["exec"]["command"] = command
    if timeout_s is not None:
        liveness["timeoutSeconds"] = timeout_s
    return docs


def worker_healthcheck(test: Any = None, timeout: Any = None) -> dict[str, Any]:
    """deploy/compose.yaml with the worker's healthcheck test and timeout replaced."""
    project = load_compose(REPO_ROOT / "deploy" / "compose.yaml")
    healthcheck = project["services"]["worker"]["healthcheck"]
    if test is not None:
        healthcheck["test"] = test
    if timeout is not None:
        healthcheck["timeout"] = timeout
    return project


def worker_errors(argv: list[str], timeout_s: float = 30) -> tuple[Errors, Errors]:
    """The errors of ``argv`` as the worker's liveness command (Kubernetes) and as its compose
    healthcheck, each with a timeout of ``timeout_s``."""
    k8s = worker_probe.check_k8s(worker_liveness(argv, timeout_s))
    compose = worker_probe.check_compose(
        worker_healthcheck(["CMD", *argv], f"{timeout_s:g}s"), "compose.yaml"
    )
    return k8s, compose


def test_the_worker_liveness_runs_its_probe() -> None:
    """The shipped liveness checks (Kubernetes, compose) run fdl-worker-probe as an argv."""
    assert worker_probe.check_k8s(worker_liveness()) == []
    project = worker_healthcheck()
    assert project["services"]["worker"]["healthcheck"]["test"][:2] == ["CMD", "fdl-worker-probe"]
    assert probes.check_compose(project, "compose.yaml") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["fdl-worker-probe"],
        ["fdl-worker-probe", "--timeout=15", "--redis-timeout", "2"],  # 23 s + 5 s start-up
        ["fdl-worker-probe", "--destination", "worker2@%h", "--timeout", "10"],
    ],
)
def test_a_worker_probe_within_the_timeout_passes(argv: list[str]) -> None:
    assert worker_errors(argv) == ([], [])


PLAIN_PING = 'export CELERY_BROKER_URL="$FDL_REDIS_URL"; exec celery inspect ping --timeout 10'


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", PLAIN_PING],  # the old liveness: a Redis outage restarted every worker
        ["sh", "-c", f"fdl-worker-probe || {PLAIN_PING}"],
        ["fdl-worker-probes"],
        # a shell or a wrapper that makes a check that cannot fail
        ["sh", "-c", "fdl-worker-probe || true"],
        ["sh", "-c", "fdl-worker-probe; exit 0"],
        ["sh", "-c", "exec fdl-worker-probe"],
        ["echo", "fdl-worker-probe"],
        ["/bin/true", "fdl-worker-probe"],
        [],
    ],
)
def test_a_worker_liveness_without_its_probe_first_fails(argv: list[str]) -> None:
    k8s, compose = worker_errors(argv)
    assert len(k8s) == 1, k8s
    assert k8s[0].startswith(
        "Deployment fdl-worker/worker: livenessProbe must run fdl-worker-probe"
    )
    assert len(compose) == 1, compose
    assert compose[0].startswith("compose.yaml: worker healthcheck must run fdl-worker-probe")


@pytest.mark.parametrize(
    "test",
    [
        ["CMD-SHELL", "fdl-worker-probe || true"],
        ["CMD-SHELL", "fdl-worker-probe"],
        "fdl-worker-probe --timeout 10",  # a string: run by the shell
        ["NONE"],
    ],
)
def test_a_compose_healthcheck_through_a_shell_fails(test: Any) -> None:
    errors = worker_probe.check_compose(worker_healthcheck(test), "compose.yaml")
    assert len(errors) == 1 and "must run fdl-worker-probe" in errors[0], errors


@pytest.mark.parametrize(
    ("argv", "timeout_s", "worst"),
    [
        (["fdl-worker-probe", "--timeout", "60"], 30, 73),  # 60 + 2 * 3 + 2 + 5
        (["fdl-worker-probe", "--redis-timeout", "10"], 30, 37),
        (["fdl-worker-probe"], 20, 23),  # the shipped probe, a shorter timeout
        (["fdl-worker-probe", "--timeout", "10"], 1, 23),  # Kubernetes' default: 1 s
    ],
)
def test_a_worker_probe_that_may_overrun_its_timeout_fails(
    argv: list[str], timeout_s: float, worst: float
) -> None:
    k8s, compose = worker_errors(argv, timeout_s)
    assert len(k8s) == 1, k8s
    assert k8s[0].startswith(
        f"Deployment fdl-worker/worker: livenessProbe: fdl-worker-probe may take {worst} s "
    )
    assert f"more than its timeoutSeconds of {timeout_s} s" in k8s[0]
    assert len(compose) == 1 and f"may take {worst} s" in compose[0], compose
    assert f"more than its timeout of {timeout_s} s" in compose[0]


def test_the_timeouts_left_out_are_the_defaults() -> None:
    """Kubernetes' timeoutSeconds is 1 s when left out; compose's timeout 30 s."""
    docs = worker_liveness()
    del docs[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["timeoutSeconds"]
    (error,) = worker_probe.check_k8s(docs)
    assert "more than its timeoutSeconds of 1 s" in error
    project = worker_healthcheck()
    del project["services"]["worker"]["healthcheck"]["timeout"]
    assert worker_probe.check_compose(project, "compose.yaml") == []
    project["services"]["worker"]["healthcheck"]["timeout"] = "1m30"
    (error,) = worker_probe.check_compose(project, "compose.yaml")
    assert error == "compose.yaml: worker healthcheck: timeout is not a duration"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["fdl-worker-probe", "--timeout", "0"], "argument --timeout: not a positive number"),
        (["fdl-worker-probe", "--timeout"], "argument --timeout: expected one argument"),
        (["fdl-worker-probe", "--help"], "unknown arguments ['--help']"),
        (["fdl-worker-probe", "celery@host"], "unknown arguments ['celery@host']"),
    ],
)
def test_a_worker_probe_it_would_refuse_fails(argv: list[str], error: str) -> None:
    k8s, compose = worker_errors(argv)
    assert len(k8s) == 1 and error in k8s[0], k8s
    assert len(compose) == 1 and error in compose[0], compose


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("1m30s", 90), ("1.5s", 1.5), ("500ms", 0.5), ("1h", 3600), ("30", None)],
)
def test_compose_durations(value: str, seconds: float | None) -> None:
    assert worker_probe.compose_seconds(value) == seconds
