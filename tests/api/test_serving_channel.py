"""The gateway's channel to the model server.

TLS: against a model server started with --ssl_config_file (client_verify on), the gateway with
the CA and a client certificate is ready and classifies; without the certificate the model server
refuses it and it answers 503, as for a model server that is down. Round robin: with a target
that names two model servers, requests reach both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from api.settings import GatewaySettings
from harness.gateway import start_gateway
from harness.mnist import png_bytes
from harness.model_server import ModelServer, ok_requests, start_model_server, wait_for_models
from harness.procs import wait_for
from harness.repository import copy_repository
from harness.tls import make_pki, ssl_config

PNG = png_bytes(np.zeros((28, 28), np.uint8))


@pytest.fixture(scope="module")
def tls_server(
    pristine_repository: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModelServer, Path, Path]]:
    work = tmp_path_factory.mktemp("serving-tls")
    pki = make_pki(work)
    repo = copy_repository(pristine_repository, work / "models")
    config = ssl_config(work / "ssl.config", pki, client_verify=True)
    server = start_model_server(
        "model-server-tls", repo, logs_dir, flags=[f"--ssl_config_file={config}"]
    )
    try:
        yield server, pki, repo
    finally:
        server.process.stop()


def _gateway(name, tls_server, redis_url, logs_dir, tmp_path, **tls: str):
    server, pki, repo = tls_server
    return start_gateway(
        name, logs_dir, redis_url, server.port, repo, tmp_path / "secrets",
        FDL_SERVING_TLS_CA_FILE=str(pki / "ca.pem"), **tls,
    )  # fmt: skip


def _classify(url: str, headers: dict[str, str]) -> httpx.Response:
    files = [("file", ("d.png", PNG, "image/png"))]
    return httpx.post(f"{url}/v1/models/digits:classify", files=files, headers=headers, timeout=30)


def test_gateway_classifies_over_mutual_tls(tls_server, redis_url, logs_dir, tmp_path) -> None:
    pki = tls_server[1]
    gateway = _gateway(
        "gateway-tls", tls_server, redis_url, logs_dir, tmp_path,
        FDL_SERVING_TLS_CERT_FILE=str(pki / "client.pem"),
        FDL_SERVING_TLS_KEY_FILE=str(pki / "client.key"),
        FDL_SERVING_TLS_SERVER_NAME="localhost",  # the certificate's DNS name
    )  # fmt: skip
    try:
        wait_for(
            lambda: httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 200,
            90,
            "gateway ready over TLS",
            check=gateway.process.ensure_alive,
        )
        response = _classify(gateway.url, gateway.classifier())
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] is not None
    finally:
        gateway.process.stop()


def test_without_client_certificate_is_unavailable(
    tls_server, redis_url, logs_dir, tmp_path
) -> None:
    gateway = _gateway("gateway-tls-anonymous", tls_server, redis_url, logs_dir, tmp_path)
    try:
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["model_server"] == "unavailable"
        response = _classify(gateway.url, gateway.classifier())
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_server_unavailable"
    finally:
        gateway.process.stop()


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("-")
    with pytest.raises(ValidationError, match="go together"):
        GatewaySettings(serving_tls_cert_file=pem)
    with pytest.raises(ValidationError, match="holds no usable PEM CA certificate"):
        GatewaySettings(serving_tls_ca_file=pem)  # "-" is no certificate
    with pytest.raises(ValidationError, match="needs FDL_SERVING_TLS_CA_FILE"):
        GatewaySettings(serving_tls_cert_file=pem, serving_tls_key_file=pem)
    with pytest.raises(ValidationError, match="serving_tls_ca_file"):
        GatewaySettings(serving_tls_ca_file=tmp_path / "missing.pem")


def test_requests_spread_over_every_address(
    pristine_repository, redis_url, logs_dir, tmp_path
) -> None:
    repo = copy_repository(pristine_repository, tmp_path / "models")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    flags = [f"--monitoring_config_file={monitoring}"]
    servers = [
        start_model_server(f"model-server-rr-{i}", repo, logs_dir, flags=flags) for i in (1, 2)
    ]
    gateway = None
    try:
        for server in servers:
            wait_for_models(server, {"digits": 2})
        target = "ipv4:" + ",".join(f"127.0.0.1:{server.port}" for server in servers)
        gateway = start_gateway(
            "gateway-rr", logs_dir, redis_url, servers[0].port, repo, tmp_path / "secrets",
            FDL_SERVING_GRPC_TARGET=target,
        )  # fmt: skip
        for _ in range(20):
            response = _classify(gateway.url, gateway.classifier())
            assert response.status_code == 200, response.text
        counts = [ok_requests(server) for server in servers]
        assert all(count > 0 for count in counts), counts
        assert sum(counts) >= 20, counts
    finally:
        if gateway is not None:
            gateway.process.stop()
        for server in servers:
            server.process.stop()
