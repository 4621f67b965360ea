"""Promotions reach every model-server replica behind the gateway's target (a Kubernetes headless
Service, an ``ipv4:`` list): each replica loads the version before any is told the label, so none
is left refusing the final config and serving the old label (docs/deploy.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from bench.promotion_race import MODEL, build_repository
from fdl.wire.tfs_pb2 import GetModelMetadataRequest, GetModelMetadataResponse, ModelSpec
from harness.gateway import ADMIN_KEY, Gateway, start_gateway
from harness.model_server import ModelServer, start_model_server, wait_for_models

# The replicas never read the config file by themselves during a test: what they serve comes
# from the gateway's reloads alone.
NO_POLLING = ("--model_config_file_poll_wait_seconds=3600",)


@pytest.fixture
def replicas(tmp_path: Path, logs_dir: Path) -> Iterator[tuple[Path, list[ModelServer]]]:
    model_dir = tmp_path / "models"
    build_repository(model_dir)
    started: list[ModelServer] = []
    try:
        for name in ("replica-a", "replica-b"):
            started.append(start_model_server(name, model_dir, logs_dir, flags=NO_POLLING))
        for server in started:
            wait_for_models(server, {MODEL: 3})
        yield model_dir, started
    finally:
        for server in started:
            server.process.stop()


@pytest.fixture
def gateway(
    replicas: tuple[Path, list[ModelServer]], redis_url: str, logs_dir: Path, tmp_path: Path
) -> Iterator[Gateway]:
    model_dir, servers = replicas
    target = "ipv4:" + ",".join(server.target for server in servers)
    started = start_gateway(
        "replicas-gateway",
        logs_dir,
        redis_url,
        servers[0].port,
        model_dir,
        tmp_path / "secrets",
        FDL_SERVING_GRPC_TARGET=target,
        FDL_PROMOTE_TIMEOUT_S="60",
    )
    try:
        yield started
    finally:
        started.process.stop()


def labelled_version(server: ModelServer, label: str) -> int:
    """The version ``label`` names on this replica, asked of it directly."""
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.PredictionService/GetModelMetadata",
            request_serializer=GetModelMetadataRequest.SerializeToString,
            response_deserializer=GetModelMetadataResponse.FromString,
        )
        request = GetModelMetadataRequest(
            model_spec=ModelSpec(name=MODEL, version_label=label),
            metadata_field=["signature_def"],
        )
        response = call(request, timeout=10)
    return int(response.model_spec.version.value)


def promote(gateway: Gateway, label: str, version: int | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    base = f"{gateway.url}/v1/models/{MODEL}/labels/{label}"
    if version is None:
        return httpx.post(f"{base}:rollback", headers=headers, timeout=120)
    return httpx.post(base, json={"version": version}, headers=headers, timeout=120)


def test_every_replica_follows_promotions_and_rollbacks(
    gateway: Gateway, replicas: tuple[Path, list[ModelServer]]
) -> None:
    _, servers = replicas
    # A new label on a retired version, then moving it to another retired version (the step a
    # replica that skipped the load would refuse), then a rollback.
    for label, version, expected in (("stable", 1, 1), ("stable", 2, 2), ("stable", None, 1)):
        response = promote(gateway, label, version)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == expected
        served = [labelled_version(server, label) for server in servers]
        assert served == [expected, expected], f"{label} -> {expected}: replicas serve {served}"
