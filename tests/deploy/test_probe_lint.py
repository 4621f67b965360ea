"""deploy/lint/probes.py on valid setups it once refused, and on the gateway's NetworkPolicy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deploy.lint import probes
from deploy.lint.common import load_compose, load_yaml_documents
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
