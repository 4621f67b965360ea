"""Model-server replicas that a change of labels did not reach converge on the repository's config
by themselves: the gateway's replica sync (``FDL_REPLICA_SYNC_S``, api/replica_sync.py) finds a
replica whose labels differ and sends it the config, with no further change of labels.

Two replicas that never poll the config file, as in test_promotion_replicas.py: what they serve
comes from the gateway alone. (a) A replica stalled (SIGSTOP) while a promotion is made is left
out of it, as a pod that does not answer is; resumed, it serves the old label until the sync
reaches it. (b) A change that reached one replica in full (the label moved, the old version
unloaded) and whose gateway died is rolled back in the files by a reader; that replica refuses
the restored config as it is, and converges through the sync's bridged reload. (c) One label
whose version is still loading does not stop the sync from fixing another on that replica.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import text_format

from bench.promotion_race import MODEL, build_repository
from fdl.repository import Repository
from fdl.repository_reads import read_labels
from fdl.wire.tfs_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    ModelServerConfig,
    ModelSpec,
    ReloadConfigRequest,
    ReloadConfigResponse,
)
from harness.gateway import ADMIN_KEY, Gateway, log_lines, set_label, start_gateway
from harness.model_server import (
    ModelServer,
    start_model_server,
    versions_available,
    wait_for_models,
)
from harness.procs import wait_for

NO_POLLING = ("--model_config_file_poll_wait_seconds=3600",)
SYNC_S = "1"
CONVERGE_S = 60
LOGGER = "api.replica_sync"


@pytest.fixture
def replicas(tmp_path: Path, logs_dir: Path) -> Iterator[tuple[Path, list[ModelServer]]]:
    model_dir = tmp_path / "models"
    build_repository(model_dir)
    started: list[ModelServer] = []
    try:
        for name in ("sync-replica-a", "sync-replica-b"):
            started.append(start_model_server(name, model_dir, logs_dir, flags=NO_POLLING))
        for server in started:
            wait_for_models(server, {MODEL: 3})
        yield model_dir, started
    finally:
        for server in started:
            server.process.signal(signal.SIGCONT)  # a stalled one must be able to stop
            server.process.stop()


def gateway_for(
    name: str, replicas: tuple[Path, list[ModelServer]], redis_url: str, logs: Path, tmp: Path
) -> Gateway:
    model_dir, servers = replicas
    return start_gateway(
        name,
        logs,
        redis_url,
        servers[0].port,
        model_dir,
        tmp / name,
        FDL_SERVING_GRPC_TARGET="ipv4:" + ",".join(server.target for server in servers),
        FDL_PROMOTE_TIMEOUT_S="60",
        # A stalled replica is left out of a change after this long.
        FDL_METADATA_TIMEOUT_S="1",
        FDL_REPLICA_SYNC_S=SYNC_S,
    )


def served(server: ModelServer, label: str) -> int | None:
    """The version ``label`` names on this replica, asked of it directly (None: no such label)."""
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
        try:
            return int(call(request, timeout=10).model_spec.version.value)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return None
            raise


def wait_served(server: ModelServer, label: str, version: int, what: str) -> None:
    wait_for(
        lambda: served(server, label) == version,
        CONVERGE_S,
        what,
        interval=0.2,
        check=server.process.ensure_alive,
    )


def reload(server: ModelServer, text: str) -> None:
    request = ReloadConfigRequest(config=text_format.Parse(text, ModelServerConfig()))
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
            request_serializer=ReloadConfigRequest.SerializeToString,
            response_deserializer=ReloadConfigResponse.FromString,
        )
        call(request, timeout=60)


def test_a_replica_left_out_of_a_promotion_converges(
    replicas: tuple[Path, list[ModelServer]], redis_url: str, logs_dir: Path, tmp_path: Path
) -> None:
    _, (first, second) = replicas
    with closing(gateway_for("sync-left-out", replicas, redis_url, logs_dir, tmp_path)) as gateway:
        response = set_label(gateway, MODEL, "stable", {"version": 1})
        assert response.status_code == 200, response.text
        for server in (first, second):
            wait_served(server, "stable", 1, f"{server.process.name} to serve stable -> 1")
        second.process.signal(signal.SIGSTOP)
        try:
            # Moved to another retired version: the stalled replica is left out of both steps.
            response = set_label(gateway, MODEL, "stable", {"version": 2})
            assert response.status_code == 200, response.text
            assert served(first, "stable") == 2
        finally:
            second.process.signal(signal.SIGCONT)
        # No further change of labels: the sync finds the replica serving stable -> 1 and sends
        # it the config, in two steps (version 2 is not loaded there).
        wait_served(second, "stable", 2, "the resumed replica to serve stable -> 2")
        assert served(first, "stable") == 2
        assert 2 in versions_available(second.target, MODEL)
        # One line for the one replica it sent the config to; none for the rounds that found
        # the replicas agreeing (at most a check cut short by the stall itself, and its end).
        lines = [line for line in log_lines(gateway.process) if line["logger"] == LOGGER]
        sent = [line for line in lines if "sending it the model config" in line["message"]]
        assert len(sent) == 1 and second.target in sent[0]["message"], lines
        others = [line["message"] for line in lines if line not in sent]
        assert all("checked" in message for message in others), lines
    # The task stops with the gateway, whose shutdown completes.
    text = gateway.process.log_path.read_text()
    assert "Application shutdown complete." in text and "Traceback" not in text, text[-4000:]


def test_a_replica_that_took_a_dead_change_converges_after_a_readers_rollback(
    replicas: tuple[Path, list[ModelServer]], redis_url: str, logs_dir: Path, tmp_path: Path
) -> None:
    model_dir, (first, second) = replicas
    with closing(gateway_for("sync-dead", replicas, redis_url, logs_dir, tmp_path)) as gateway:
        response = set_label(gateway, MODEL, "stable", {"version": 1})
        assert response.status_code == 200, response.text
        for server in (first, second):
            wait_served(server, "stable", 1, f"{server.process.name} to serve stable -> 1")
        # A gateway's promotion of stable to 2, taken in full by the first replica, and no
        # acknowledgement: its undo records are left, as a SIGKILL leaves them.
        repository = Repository(model_dir)
        with repository.file_lock():
            labels = repository.labels()
            repository.undo_point()
            step_1 = repository.render(labels, {MODEL: {2}})
            repository.write_config(step_1)
            reload(first, step_1)
            wait_for(
                lambda: 2 in versions_available(first.target, MODEL),
                60,
                "version 2 to load",
                check=first.process.ensure_alive,
            )
            labels[MODEL]["stable"] = 2
            repository.write_labels(labels)
            final = repository.render(labels)
            repository.write_config(final)
            reload(first, final)
            assert served(first, "stable") == 2
            # Under the lock: the sync, which tries it every round, rolls the change back only
            # once the replica has taken it in full (else it would find version 1 still there).
            wait_for(
                lambda: 1 not in versions_available(first.target, MODEL),
                60,
                "version 1 to be unloaded",
                check=first.process.ensure_alive,
            )
        # A reader rolls the dead change back in the files (the sync, whose round may come
        # first, would too): it sends nothing to the replicas.
        response = httpx.get(
            f"{gateway.url}/v1/models/{MODEL}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert read_labels(model_dir) == {MODEL: {"stable": 1}}
        wait_served(first, "stable", 1, "the replica that took the dead change to serve 1")
        assert served(second, "stable") == 1


def test_a_label_whose_version_loads_does_not_hide_another_difference(
    tmp_path: Path, redis_url: str, logs_dir: Path
) -> None:
    """On our model server a label whose version is still loading answers UNAVAILABLE ("still
    loading"; TF Serving: NOT_FOUND): that label waits, and the replica's other labels are still
    compared and fixed. Before, the answer failed the whole replica's check, so zzz stayed."""
    model_dir = tmp_path / "models"
    build_repository(model_dir)
    write_labels(model_dir, {MODEL: {"stable": 2, "zzz": 1}})
    (model_dir / MODEL / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    flags = (*NO_POLLING, "--max_num_load_retries=5", "--load_retry_interval_micros=600000000")
    server = start_model_server("sync-loading", model_dir, logs_dir, flags=flags)
    try:
        wait_for_models(server, {MODEL: 1})
        wait_for_models(server, {MODEL: 3})
        write_labels(model_dir, {MODEL: {"stable": 2, "zzz": 3}})  # the replica left out
        with pytest.raises(grpc.RpcError) as loading:
            served(server, "stable")
        assert loading.value.code() == grpc.StatusCode.UNAVAILABLE
        with closing(
            start_gateway(
                "sync-loading",
                logs_dir,
                redis_url,
                server.port,
                model_dir,
                tmp_path / "secrets",
                FDL_REPLICA_SYNC_S="0.5",
            )
        ):
            wait_served(server, "zzz", 3, "the sync to move zzz beside a loading label")
    finally:
        server.process.stop()


def write_labels(model_dir: Path, labels: dict[str, dict[str, int]]) -> None:
    """Labels and config written as a change would write them, sent to no model server."""
    repository = Repository(model_dir)
    with repository.file_lock():
        repository.write_labels(labels)
        repository.write_config(repository.render(labels))
