"""A change of labels that reached the model server in full, then was undone.

A gateway promoting ``promo`` stable 1 -> 2 loads version 2, then sends the final config (stable
on 2, version 1 no longer kept), which the model server takes, and dies before it acknowledges
the change. The next holder of the repository lock rolls the files back (stable on 1), but the
restored config moves an existing label to version 1, which that server has unloaded: sent or
polled as is, it is refused, so the server went on serving the undone stable -> 2 and refused
every later config of the model (each later change of labels answered 409 ``reload_rejected``).
The gateway now sends such a config in two steps (:mod:`api.replica_configs`).

The dead gateway's part is played by the test, with the repository's own calls and the model
server's ``HandleReloadConfigRequest``, in the order a gateway makes them, to a real model server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from api.replica_configs import bridge_config
from fdl.repository import CONFIG_FILE, Repository, render_config
from fdl.repository_reads import read_labels
from fdl.wire.tfs_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    ModelServerConfig,
    ModelSpec,
    ReloadConfigRequest,
    ReloadConfigResponse,
)
from harness.gateway import Gateway, set_label, start_gateway
from harness.model_server import ModelServer, model_server_running, versions_available
from harness.procs import wait_for
from harness.repository import SERVED, copy_repository


@dataclass
class Stack:
    model_dir: Path
    server: ModelServer
    start: Callable[..., Gateway]


@pytest.fixture
def stack(
    pristine_repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    model_dir = copy_repository(pristine_repository, tmp_path / "models")

    def start(name: str, **overrides: str) -> Gateway:
        return start_gateway(
            name, logs_dir, redis_url, server.port, model_dir, tmp_path / name, **overrides
        )

    with model_server_running("undone-model-server", model_dir, logs_dir, SERVED) as server:
        yield Stack(model_dir, server, start)


def reload(server: ModelServer, text: str) -> None:
    request = ReloadConfigRequest(config=text_format.Parse(text, ModelServerConfig()))
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
            request_serializer=ReloadConfigRequest.SerializeToString,
            response_deserializer=ReloadConfigResponse.FromString,
        )
        call(request, timeout=60)


def served(server: ModelServer, model: str, label: str) -> int | None:
    """The version ``label`` names on the model server now (None: it has no such label)."""
    request = GetModelMetadataRequest(
        model_spec=ModelSpec(name=model, version_label=label), metadata_field=["signature_def"]
    )
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.PredictionService/GetModelMetadata",
            request_serializer=GetModelMetadataRequest.SerializeToString,
            response_deserializer=GetModelMetadataResponse.FromString,
        )
        try:
            return int(call(request, timeout=10).model_spec.version.value)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                return None
            raise


def promote_and_die(stack: Stack, label: str, version: int) -> None:
    """A gateway's promotion of ``promo`` ``label`` -> ``version``, both steps taken by the
    model server, and no acknowledgement: the undo records are left, as a SIGKILL leaves them."""
    repository = Repository(stack.model_dir)
    with repository.file_lock():
        repository.recover()
        labels = repository.labels()
        repository.undo_point()  # records of both files, never discarded
        step_1 = repository.render(labels, {"promo": {version}})
        repository.write_config(step_1)
        reload(stack.server, step_1)
        wait_for(
            lambda: version in versions_available(stack.server.target, "promo"),
            60,
            f"promo version {version} to load",
            check=stack.server.process.ensure_alive,
        )
        labels.setdefault("promo", {})[label] = version
        repository.write_labels(labels)
        final = repository.render(labels)
        repository.write_config(final)
        reload(stack.server, final)


def stuck_setup(stack: Stack, gateway: Gateway) -> None:
    """stable on 1 (served), then a dead promotion to 2 that unloaded version 1."""
    response = set_label(gateway, "promo", "stable", {"version": 1})
    assert response.status_code == 200, response.text
    promote_and_die(stack, "stable", 2)
    assert served(stack.server, "promo", "stable") == 2
    wait_for(
        lambda: 1 not in versions_available(stack.server.target, "promo"),
        60,
        "promo version 1 to be unloaded",
        check=stack.server.process.ensure_alive,
    )


def test_the_next_change_puts_the_served_label_back(stack: Stack) -> None:
    with closing(stack.start("undone-next")) as gateway:
        stuck_setup(stack, gateway)
        # An unrelated change of the same model: it rolls the dead one back first.
        response = set_label(gateway, "promo", "canary", {"version": 3})
        assert response.status_code == 200, response.text
        assert read_labels(stack.model_dir) == {"promo": {"stable": 1, "canary": 3}}
        assert served(stack.server, "promo", "stable") == 1
        assert served(stack.server, "promo", "canary") == 3
        assert (stack.model_dir / CONFIG_FILE).read_text() == render_config(stack.model_dir)
        # And later changes are taken, as before the dead one.
        response = set_label(gateway, "promo", "stable", {"version": 3})
        assert response.status_code == 200, response.text
        assert served(stack.server, "promo", "stable") == 3


def test_a_restarted_gateway_puts_the_served_label_back(stack: Stack) -> None:
    with closing(stack.start("undone-first")) as gateway:
        stuck_setup(stack, gateway)
    # No change of labels: the gateway's start rolls the dead change back and sends the config.
    with closing(stack.start("undone-restarted")):
        wait_for(
            lambda: served(stack.server, "promo", "stable") == 1,
            60,
            "the undone label to leave the model server",
            check=stack.server.process.ensure_alive,
        )
        assert read_labels(stack.model_dir) == {"promo": {"stable": 1}}
        assert (stack.model_dir / CONFIG_FILE).read_text() == render_config(stack.model_dir)


def test_a_change_whose_bridge_fails_leaves_nothing_served(stack: Stack) -> None:
    """The next change's config is bridged (its new label goes out in the first step, its
    version being loaded) and the bridge then fails: version 1, which the restored stable names,
    no longer loads. The change is undone on the replica too, its new label included."""
    with closing(stack.start("undone-broken", FDL_PROMOTE_TIMEOUT_S="5")) as gateway:
        stuck_setup(stack, gateway)
        for graph in (stack.model_dir / "promo" / "1").rglob("saved_model.pb"):
            graph.write_bytes(b"not a graph")
        response = set_label(gateway, "promo", "canary", {"version": 3})
        assert response.status_code in (409, 504), response.text
        assert read_labels(stack.model_dir) == {"promo": {"stable": 1}}
        assert served(stack.server, "promo", "canary") is None


def _config(versions: list[int], labels: dict[str, int]) -> ModelServerConfig:
    config = ModelServerConfig()
    model = config.model_config_list.config.add(name="m", base_path="/m")
    model.model_version_policy.specific.versions.extend(versions)
    model.version_labels.update(labels)
    return config


def test_the_bridge_keeps_the_replicas_labels_and_adds_the_versions() -> None:
    wanted = _config([1, 3], {"stable": 1, "canary": 3})
    bridge = bridge_config(wanted, {"m": {2, 3}}, {"m": {"stable": 2}})
    assert bridge == _config([1, 2, 3], {"stable": 2, "canary": 3})
    # A label the replica does not have and whose version is not loaded waits for step 2.
    assert bridge_config(wanted, {"m": {3}}, {"m": {}}) == _config([1, 3], {"canary": 3})
    # Every label's version loaded: nothing to bridge, the refusal was for something else.
    assert bridge_config(wanted, {"m": {1, 3}}, {"m": {"stable": 2}}) is None
