"""HandleReloadConfigRequest: version policies, version labels, adding and removing models."""

from __future__ import annotations

import json
import urllib.request

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from harness.procs import wait_for
from harness.tfs import (
    images,
    model_config,
    predict_request,
    rpc_code,
    served_version,
    statuses,
)

State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture(scope="module")
def reloadable(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("reload")
    for version, kind in ((1, "a"), (2, "b"), (3, "c")):
        model_stock.install(kind, root / "pol", version)
    model_stock.install("a", root / "late", 1)
    config = root / "models.config"
    config.write_text(model_config({"pol": root / "pol"}))
    server = server_factory(
        impl, "reload", [f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"]
    )
    return server, root


def reload(server, root, extra: str = "", late: bool = False) -> None:
    models = {"pol": root / "pol"} | ({"late": root / "late"} if late else {})
    text = model_config(models, {"pol": extra})
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    server.models().HandleReloadConfigRequest(request, timeout=120)


def available(server, name: str) -> set[int]:
    return {v for v, (state, _) in statuses(server, name).items() if state == State.AVAILABLE}


def test_default_policy_serves_latest(reloadable) -> None:
    server, _ = reloadable
    assert available(server, "pol") == {3}
    assert served_version(server, "pol") == 3


@pytest.mark.parametrize(
    ("policy", "versions"),
    [
        ("latest { num_versions: 2 }", {2, 3}),
        ("all {}", {1, 2, 3}),
        ("specific { versions: 1 }", {1}),
        ("specific { versions: 1 versions: 2 }", {1, 2}),
    ],
)
def test_version_policies(reloadable, policy, versions) -> None:
    server, root = reloadable
    reload(server, root, f"    model_version_policy {{ {policy} }}\n")
    wait_for(lambda: available(server, "pol") == versions, 60, f"versions {versions}")
    assert served_version(server, "pol") == max(versions)


def test_labels(reloadable) -> None:
    server, root = reloadable
    policy = "    model_version_policy { specific { versions: 1 versions: 2 } }\n"
    reload(server, root, policy)
    wait_for(lambda: available(server, "pol") == {1, 2}, 60, "versions 1 and 2")
    labels = 'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'
    reload(server, root, policy + f"    {labels}\n")
    stub = server.prediction()
    for label, version in (("stable", 1), ("canary", 2)):
        response = stub.Predict(predict_request("pol", images(1), label=label), timeout=30)
        assert response.model_spec.version.value == version
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/pol/labels/canary:predict"
    body = json.dumps({"instances": images(1).tolist()}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
        assert reply.status == 200

    # A label may only point at an available version; the old labels stay.
    with pytest.raises(grpc.RpcError) as info:
        reload(server, root, policy + '    version_labels { key: "stable" value: 3 }\n')
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not currently available" in info.value.details()
    response = stub.Predict(predict_request("pol", images(1), label="stable"), timeout=30)
    assert response.model_spec.version.value == 1


def test_add_and_remove_models(reloadable) -> None:
    server, root = reloadable
    reload(server, root, late=True)
    # A reload returns once new models are available.
    assert served_version(server, "late") == 1
    reload(server, root, late=False)

    wait_for(
        lambda: rpc_code(lambda: served_version(server, "late")) == grpc.StatusCode.NOT_FOUND,
        30,
        "model 'late' removed",
    )


def test_invalid_reload_is_rejected(reloadable) -> None:
    server, _ = reloadable
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(model_server_config_pb2.ModelServerConfig())
    request.config.custom_model_config.Pack(model_server_config_pb2.ModelServerConfig())
    with pytest.raises(grpc.RpcError) as info:
        server.models().HandleReloadConfigRequest(request, timeout=30)
    assert info.value.code() in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert served_version(server, "pol") >= 1
