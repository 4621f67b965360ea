"""A request by label whose cached version is no longer available resolves the label again.

A gateway keeps which version a label names for ``RESOLVE_TTL_S``; a change of labels made
elsewhere (another gateway, an operator's config) can meanwhile unload that version and start
loading it again. The model server then answers UNAVAILABLE "still loading" for it, which the
gateway answered 503 with while the label named another, served version. And a label lookup in
flight when the gateway dropped its resolutions (a promotion through it) stored the old answer
after the drop, so the next request, and the retry of one, went to the old version again.

The model server and the gateway are real processes; a version "loading" is one whose files were
broken while it was loaded: unloaded and asked for again, its load fails and waits for a retry
(``--load_retry_interval_micros``) in the LOADING state, for as long as the test needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from api.metadata_cache import RESOLVE_TTL_S, MetadataCache
from api.serving_client import ServingClient
from bench.promotion_race import MODEL, build_repository
from fdl.wire.tfs_pb2 import (
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelServerConfig,
    ModelSpec,
    ModelVersionStatus,
    ReloadConfigRequest,
    ReloadConfigResponse,
)
from harness.gateway import Gateway, classify, start_gateway
from harness.model_server import ModelServer, start_model_server, wait_for_models
from harness.procs import wait_for

# The server reads no config file after its start (what it serves comes from the test's reloads
# alone), and a failed load waits ten minutes, LOADING, before its retry.
FLAGS = (
    "--model_config_file_poll_wait_seconds=3600",
    "--max_num_load_retries=3",
    "--load_retry_interval_micros=600000000",
)
State = ModelVersionStatus.State


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    model_dir = tmp_path / "models"
    build_repository(model_dir)  # versions 1, 2 and 3; "latest" serves 3
    return model_dir


@pytest.fixture
def server(repository: Path, logs_dir: Path) -> Iterator[ModelServer]:
    running = start_model_server("label-cache-model-server", repository, logs_dir, flags=FLAGS)
    try:
        wait_for_models(running, {MODEL: 3})
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def gateway(
    server: ModelServer, repository: Path, redis_url: str, logs_dir: Path, tmp_path: Path
) -> Iterator[Gateway]:
    started = start_gateway(
        "label-cache-gateway",
        logs_dir,
        redis_url,
        server.port,
        repository,
        tmp_path / "secrets",
        FDL_REPLICA_SYNC_S="0",  # it would put labels.json's labels back on the server
    )
    try:
        yield started
    finally:
        started.process.stop()


def reload(server: ModelServer, repository: Path, versions: list[int], canary: int) -> None:
    """Serve ``versions`` of the model, ``canary`` naming one of them (HandleReloadConfig)."""
    config = text_format.Parse(
        f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{repository / MODEL}" '
        'model_platform: "tensorflow" model_version_policy { specific { '
        + " ".join(f"versions: {v}" for v in versions)
        + f' }} }} version_labels {{ key: "canary" value: {canary} }} }} }}',
        ModelServerConfig(),
    )
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
            request_serializer=ReloadConfigRequest.SerializeToString,
            response_deserializer=ReloadConfigResponse.FromString,
        )
        response = call(ReloadConfigRequest(config=config), timeout=30)
    assert response.status.error_code == 0, response.status.error_message


def states(server: ModelServer) -> dict[int, int]:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString,
        )
        response = call(GetModelStatusRequest(model_spec=ModelSpec(name=MODEL)), timeout=5)
    return {s.version: s.state for s in response.model_version_status}


def classify_canary(gateway: Gateway) -> tuple[int, dict]:
    url = f"{gateway.url}/v1/models/{MODEL}/labels/canary:classify"
    response = classify(url, headers=gateway.classifier())
    return response.status_code, response.json()


def break_files(repository: Path, version: int) -> None:
    """The version's graph no longer parses: the next load of it fails (the loaded one serves)."""
    (repository / MODEL / str(version) / "saved_model.pb").write_bytes(b"not a graph")


def test_a_label_whose_cached_version_is_loading_again_answers_from_its_new_version(
    gateway: Gateway, server: ModelServer, repository: Path
) -> None:
    # Each try takes a version of its own (a broken one stays LOADING); a try slower than the
    # gateway's resolution TTL proves nothing, so a second one follows.
    for version in (1, 2):
        reload(server, repository, [version, 3], canary=3)  # a label moves to loaded versions
        wait_for_models(server, {MODEL: version})
        reload(server, repository, [version, 3], canary=version)
        break_files(repository, version)
        cached_at = time.monotonic()
        status, body = classify_canary(gateway)  # the gateway keeps canary -> version
        assert (status, body.get("version")) == (200, version), body
        # Elsewhere, canary moves to 3 and the version is unloaded, then asked for again.
        reload(server, repository, [3], canary=3)
        wait_for(lambda v=version: states(server)[v] == State.END, 30, "the version unloaded")
        reload(server, repository, [version, 3], canary=3)
        wait_for(lambda v=version: states(server)[v] == State.LOADING, 30, "the version loading")
        asked_at = time.monotonic()
        status, body = classify_canary(gateway)
        if asked_at - cached_at < RESOLVE_TTL_S:
            assert (status, body.get("version")) == (200, 3), body
            return
    pytest.fail("each try took longer than the gateway keeps a label's resolution")


def test_a_label_lookup_in_flight_at_an_invalidation_is_not_stored(
    server: ModelServer, repository: Path
) -> None:
    reload(server, repository, [1, 3], canary=1)
    wait_for_models(server, {MODEL: 1})

    async def scenario() -> tuple[int, int]:
        client = ServingClient(server.target)
        # Long TTLs: an entry stored by mistake is still there when the test looks.
        cache = MetadataCache(client, ttl_s=600, resolve_ttl_s=600, model_dir=repository)
        try:
            lookup = asyncio.create_task(cache.get(MODEL, None, "canary"))
            await asyncio.sleep(0)  # the lookup's GetModelMetadata is in flight
            cache.invalidate(MODEL)  # as a promotion through this gateway does
            answered = (await lookup).version
            await asyncio.to_thread(reload, server, repository, [1, 3], 3)
            return answered, (await cache.get(MODEL, None, "canary")).version
        finally:
            await client.close()

    answered, after = asyncio.run(scenario())
    assert answered == 1  # the request that asked uses the answer it got
    assert after == 3, "the lookup that started before the invalidation was stored after it"
