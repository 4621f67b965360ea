"""The gateway's Kubernetes settings (its ConfigMaps fdl-env and fdl-gateway-env) fit the shipped
ingress-nginx Ingress:
X-Forwarded-For is believed from pod addresses (so anonymous clients do not share the controller
pod's rate-limit bucket), and idle keep-alive outlasts nginx's upstream keep-alive."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import yaml
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.settings import GatewaySettings
from harness.procs import REPO_ROOT

BASE = REPO_ROOT / "deploy" / "k8s" / "base"
NGINX_UPSTREAM_KEEPALIVE_S = 60  # ingress-nginx upstream-keepalive-timeout default


def gateway_env() -> dict[str, str]:
    """The variables of the gateway container with a plain value or from a ConfigMap it takes
    whole (envFrom), as the kubelet sets them (env wins)."""
    docs = [
        d
        for f in ("config.yaml", "gateway.yaml")
        for d in yaml.safe_load_all((BASE / f).read_text())
        if d
    ]
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]].items()})
    env.update({e["name"]: str(e["value"]) for e in container["env"] if "value" in e})
    return env


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    """GatewaySettings as a gateway pod reads them."""
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)
    for name, value in gateway_env().items():
        monkeypatch.setenv(name, value)
    return GatewaySettings(_env_file=None)  # type: ignore[call-arg]


def client_seen(settings: GatewaySettings, peer: str, forwarded_for: str) -> str:
    """The client address the gateway's app sees, with uvicorn's middleware as api/__main__.py
    configures it (forwarded_allow_ips from FDL_TRUSTED_PROXIES)."""
    trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["client"] = scope["client"]

    middleware = ProxyHeadersMiddleware(app, trusted_hosts=trusted)  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    return str(seen["client"][0])


def test_forwarded_for_is_believed_from_pod_addresses(settings: GatewaySettings) -> None:
    for ingress_pod in ("10.244.3.17", "172.20.0.5", "192.168.12.9"):
        assert client_seen(settings, ingress_pod, "203.0.113.9") == "203.0.113.9"
    # A peer outside the private ranges cannot choose the address it is counted as.
    assert client_seen(settings, "198.51.100.1", "203.0.113.9") == "198.51.100.1"


def test_idle_keepalive_outlasts_nginx_upstream_keepalive(settings: GatewaySettings) -> None:
    assert settings.keepalive_timeout_s > NGINX_UPSTREAM_KEEPALIVE_S
    assert GatewaySettings.model_fields["keepalive_timeout_s"].default == 5.0  # direct exposure
