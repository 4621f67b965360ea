"""The gateway's own protobuf messages are byte-compatible with TensorFlow Serving's.

For every message the gateway sends or reads, the same content is built with ``fdl.wire`` and
with the official ``tensorflow_serving.apis`` / ``tensorflow.core`` modules; both serialize to
the same bytes, and each side parses the other's bytes back to an equal message.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    status_pb2,
)
from tensorflow_serving.config import file_system_storage_path_source_pb2, model_server_config_pb2

from fdl.repository import render_config
from fdl.tensors import to_numpy as from_tensor_proto
from fdl.tensors import to_tensor_proto
from fdl.wire import tfs_pb2 as ours

OFFICIAL = SimpleNamespace(
    DataType=types_pb2,
    TensorProto=tensor_pb2.TensorProto,
    TensorShapeProto=tensor_shape_pb2.TensorShapeProto,
    TensorInfo=meta_graph_pb2.TensorInfo,
    SignatureDef=meta_graph_pb2.SignatureDef,
    ModelSpec=model_pb2.ModelSpec,
    PredictRequest=predict_pb2.PredictRequest,
    PredictResponse=predict_pb2.PredictResponse,
    SignatureDefMap=get_model_metadata_pb2.SignatureDefMap,
    GetModelMetadataRequest=get_model_metadata_pb2.GetModelMetadataRequest,
    GetModelMetadataResponse=get_model_metadata_pb2.GetModelMetadataResponse,
    GetModelStatusRequest=get_model_status_pb2.GetModelStatusRequest,
    GetModelStatusResponse=get_model_status_pb2.GetModelStatusResponse,
    ModelVersionStatus=get_model_status_pb2.ModelVersionStatus,
    StatusProto=status_pb2.StatusProto,
    ModelServerConfig=model_server_config_pb2.ModelServerConfig,
    ModelConfig=model_server_config_pb2.ModelConfig,
    ServableVersionPolicy=(
        file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
    ),
    ReloadConfigRequest=model_management_pb2.ReloadConfigRequest,
    ReloadConfigResponse=model_management_pb2.ReloadConfigResponse,
)
OURS = SimpleNamespace(
    DataType=ours,
    **{
        name: getattr(ours, name)
        for name in vars(OFFICIAL)
        if name not in ("DataType", "ServableVersionPolicy")
    },
    ServableVersionPolicy=ours.ServableVersionPolicy,
)
SIGNATURE_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


def shape(ns: Any, *dims: int) -> Any:
    return ns.TensorShapeProto(dim=[ns.TensorShapeProto.Dim(size=d) for d in dims])


def tensor_content(ns: Any) -> Any:
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).tobytes()
    return ns.TensorProto(
        dtype=ns.DataType.DT_UINT8, tensor_shape=shape(ns, 2, 28, 28, 1), tensor_content=pixels
    )


def typed_values(ns: Any) -> Any:
    return ns.TensorProto(
        dtype=ns.DataType.DT_FLOAT, tensor_shape=shape(ns, 1, 3), float_val=[0.25, 0.5, 0.25]
    )


def strings(ns: Any) -> Any:
    return ns.TensorProto(
        dtype=ns.DataType.DT_STRING, tensor_shape=shape(ns, 1, 2), string_val=[b"cat", b"dog"]
    )


def model_spec_version(ns: Any) -> Any:
    spec = ns.ModelSpec(name="digits", signature_name="serving_default")
    spec.version.value = 3
    return spec


def model_spec_label(ns: Any) -> Any:
    return ns.ModelSpec(name="digits", version_label="canary")


def predict_request(ns: Any) -> Any:
    request = ns.PredictRequest(model_spec=model_spec_version(ns), output_filter=["scores"])
    request.inputs["images"].CopyFrom(tensor_content(ns))
    return request


def predict_response(ns: Any) -> Any:
    response = ns.PredictResponse(model_spec=model_spec_version(ns))
    response.outputs["scores"].CopyFrom(typed_values(ns))
    response.outputs["classes"].CopyFrom(strings(ns))
    return response


def signature_map(ns: Any) -> Any:
    signatures = ns.SignatureDefMap()
    signature = signatures.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    signature.inputs["images"].CopyFrom(
        ns.TensorInfo(
            name="serving_default_images:0",
            dtype=ns.DataType.DT_UINT8,
            tensor_shape=shape(ns, -1, 28, 28, 1),
        )
    )
    signature.outputs["scores"].CopyFrom(
        ns.TensorInfo(
            name="StatefulPartitionedCall:0",
            dtype=ns.DataType.DT_FLOAT,
            tensor_shape=shape(ns, -1, 10),
        )
    )
    return signatures


def metadata_request(ns: Any) -> Any:
    return ns.GetModelMetadataRequest(
        model_spec=model_spec_label(ns), metadata_field=["signature_def"]
    )


def metadata_response(ns: Any) -> Any:
    response = ns.GetModelMetadataResponse(model_spec=model_spec_version(ns))
    packed = response.metadata["signature_def"]
    packed.type_url = SIGNATURE_MAP_URL
    packed.value = signature_map(ns).SerializeToString(deterministic=True)
    return response


def status_request(ns: Any) -> Any:
    return ns.GetModelStatusRequest(model_spec=model_spec_version(ns))


def status_response(ns: Any) -> Any:
    response = ns.GetModelStatusResponse()
    item = response.model_version_status.add(version=2, state=ns.ModelVersionStatus.AVAILABLE)
    item.status.error_code = 0
    failed = response.model_version_status.add(version=1, state=ns.ModelVersionStatus.END)
    failed.status.error_code = 5
    failed.status.error_message = "not found"
    return response


def server_config(ns: Any) -> Any:
    config = ns.ModelServerConfig()
    first = config.model_config_list.config.add(
        name="digits", base_path="/models/digits", model_platform="tensorflow"
    )
    first.model_version_policy.specific.versions.extend([1, 2])
    first.version_labels["stable"] = 1
    first.version_labels["canary"] = 2
    second = config.model_config_list.config.add(name="photos", base_path="/models/photos")
    second.model_version_policy.latest.num_versions = 2
    third = config.model_config_list.config.add(name="all", base_path="/models/all")
    third.model_version_policy.all.SetInParent()
    return config


def reload_request(ns: Any) -> Any:
    return ns.ReloadConfigRequest(config=server_config(ns))


def reload_response(ns: Any) -> Any:
    return ns.ReloadConfigResponse(status=ns.StatusProto(error_code=3, error_message="bad"))


BUILDERS: list[Callable[[Any], Any]] = [
    tensor_content,
    typed_values,
    strings,
    model_spec_version,
    model_spec_label,
    predict_request,
    predict_response,
    signature_map,
    metadata_request,
    metadata_response,
    status_request,
    status_response,
    server_config,
    reload_request,
    reload_response,
]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
def test_same_bytes_both_ways(build: Callable[[Any], Any]) -> None:
    mine, theirs = build(OURS), build(OFFICIAL)
    mine_bytes = mine.SerializeToString(deterministic=True)
    their_bytes = theirs.SerializeToString(deterministic=True)
    assert mine_bytes, "an empty message proves nothing"
    assert mine_bytes == their_bytes
    assert type(theirs).FromString(mine_bytes) == theirs
    assert type(mine).FromString(their_bytes) == mine


def test_data_type_numbers_match() -> None:
    for name, number in ours.DataType.items():
        assert types_pb2.DataType.Value(name) == number, name


def test_version_states_match() -> None:
    theirs = get_model_status_pb2.ModelVersionStatus.State
    for name, number in ours.ModelVersionStatus.State.items():
        assert theirs.Value(name) == number, name


def test_rendered_config_text_parses_identically(tmp_path) -> None:
    for name, versions in (("digits", [1, 2, 3]), ("photos", [1])):
        for version in versions:
            (tmp_path / name / str(version)).mkdir(parents=True)
    text = render_config(tmp_path, {"digits": {"stable": 1, "canary": 3}})
    mine = text_format.Parse(text, ours.ModelServerConfig())
    theirs = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert list(mine.model_config_list.config[0].model_version_policy.specific.versions) == [1, 3]
    assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def test_tensor_helpers_against_official_make_tensor_proto() -> None:
    """What the gateway sends decodes with TF's own helper; what TF sends decodes here."""
    import tensorflow as tf

    batch = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    sent = tensor_pb2.TensorProto.FromString(to_tensor_proto(batch).SerializeToString())
    np.testing.assert_array_equal(tf.make_ndarray(sent), batch)

    scores = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], dtype=np.float32)
    for proto in (
        tf.make_tensor_proto(scores),  # tensor_content
        tensor_pb2.TensorProto(  # typed field
            dtype=types_pb2.DT_FLOAT, tensor_shape=shape(OFFICIAL, 2, 3), float_val=scores.ravel()
        ),
    ):
        mine = ours.TensorProto.FromString(proto.SerializeToString())
        np.testing.assert_array_equal(from_tensor_proto(mine), scores)
    names = tf.make_tensor_proto(np.array([[b"cat", b"dog"]], dtype=object))
    decoded = from_tensor_proto(ours.TensorProto.FromString(names.SerializeToString()))
    assert decoded.tolist() == [[b"cat", b"dog"]]
    # TF compresses a tensor of equal values to one typed value.
    same = tf.make_tensor_proto(np.full((2, 2), 0.5, np.float32))
    same_mine = ours.TensorProto.FromString(same.SerializeToString())
    np.testing.assert_array_equal(from_tensor_proto(same_mine), np.full((2, 2), 0.5, np.float32))
    # Half precision in its typed field (uint16 bit patterns) and a scalar (no dimensions).
    for value in (np.array([[1.5, -2.25]], np.float16), np.array(7, np.int64)):
        official = tf.make_tensor_proto(value)
        if value.dtype == np.float16:
            official.ClearField("tensor_content")
            official.half_val.extend(value.view(np.uint16).ravel().tolist())
        decoded = from_tensor_proto(ours.TensorProto.FromString(official.SerializeToString()))
        assert decoded.dtype == value.dtype and decoded.shape == value.shape
        np.testing.assert_array_equal(decoded, value)
