"""Conformance of the gRPC API (Predict, errors, metadata, status, Classify, health, reflection),
with the official tensorflow_serving stubs as client; ``api_server`` is in conftest.py."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
)

from harness.tfs import expected_scores, images, predict_request, rpc_error, scores_of


def test_predict_matches_in_process_signature(api_server, model_stock) -> None:
    batch = images(3, seed=11)
    response = api_server.prediction().Predict(predict_request("tiny", batch), timeout=30)
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 2  # newest of the loaded versions
    assert response.model_spec.signature_name == "serving_default"
    np.testing.assert_allclose(
        scores_of(response), expected_scores(model_stock.versions["b"], batch), rtol=1e-5
    )
    classes = [c.decode() for c in response.outputs["classes"].string_val]
    assert classes[:4] == ["0", "1", "2", "3"]


def test_predict_by_version_and_typed_fields(api_server, model_stock) -> None:
    batch = images(2, seed=12)
    stub = api_server.prediction()
    by_content = stub.Predict(predict_request("tiny", batch, version=1), timeout=30)
    by_fields = stub.Predict(predict_request("tiny", batch, version=1, content=False), timeout=30)
    assert by_content.model_spec.version.value == 1
    expected = expected_scores(model_stock.versions["a"], batch)
    np.testing.assert_allclose(scores_of(by_content), expected, rtol=1e-5)
    np.testing.assert_allclose(scores_of(by_fields), expected, rtol=1e-5)
    assert not np.allclose(scores_of(by_content), expected_scores(model_stock.versions["b"], batch))


def test_output_filter(api_server) -> None:
    request = predict_request("tiny", images(1))
    request.output_filter.append("scores")
    response = api_server.prediction().Predict(request, timeout=30)
    assert set(response.outputs) == {"scores"}
    request.output_filter[:] = ["nope"]
    code, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nope" in details


@pytest.mark.parametrize(
    ("mutate", "code", "needle"),
    [
        (lambda r: setattr(r.model_spec, "name", "missing"), grpc.StatusCode.NOT_FOUND, "missing"),
        (lambda r: r.model_spec.version.__setattr__("value", 9), grpc.StatusCode.NOT_FOUND, "9"),
        (
            lambda r: r.inputs["pixels"].CopyFrom(r.inputs.pop("images")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pixels",
        ),
        (
            lambda r: r.inputs["images"].__setattr__("dtype", 1),  # DT_FLOAT
            grpc.StatusCode.INVALID_ARGUMENT,
            "images",
        ),
        (
            lambda r: (
                r.inputs["images"].tensor_shape.dim[1].__setattr__("size", 4)
                or r.inputs["images"].tensor_shape.dim[2].__setattr__("size", 16)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "images",
        ),
        (  # FAILED_PRECONDITION: TF Serving's predict_util.cc, RunPredict (:91-94 @ 9d981c5c)
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda r: setattr(r.model_spec, "version_label", "nolabel"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nolabel",
        ),
    ],
    ids=["model", "version", "input-name", "dtype", "shape", "signature", "label"],
)
def test_errors(api_server, mutate, code, needle) -> None:
    request = predict_request("tiny", images(2, seed=3))
    mutate(request)
    got, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert got == code, details
    assert needle in details


def test_wrong_dtype_with_typed_values(api_server) -> None:
    import tensorflow as tf

    request = predict_request("tiny", images(1))
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images(1).astype(np.float32)))
    code, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    if api_server.impl == "fdl":  # TF Serving's own text comes from Session::Run
        assert "images" in details


def _malformed(kind: str):
    request = predict_request("tiny", images(2, seed=4))
    tensor = request.inputs["images"]
    if kind == "content-float":  # 7 bytes: not whole 4-byte floats
        tensor.dtype, tensor.tensor_content = 1, b"\0" * 7
    elif kind == "content-count":  # 127 pixels for a [2, 8, 8, 1] shape
        tensor.tensor_content = tensor.tensor_content[:-1]
    else:
        tensor.ClearField("tensor_content")
        tensor.int_val.append(1)
        del tensor.tensor_shape.dim[:]
        sizes = [2**40, 2**40] if kind == "huge" else [1] * 70
        for size in sizes:
            tensor.tensor_shape.dim.add(size=size)
    return request


@pytest.mark.parametrize("kind", ["content-float", "content-count", "huge", "rank-70"])
def test_malformed_tensor_is_invalid_argument(api_server, kind) -> None:
    """A TensorProto that does not parse is INVALID_ARGUMENT "tensor parsing error: <input>", as
    TensorFlow's saved_model::GetInputValues words a failed Tensor::FromProto (tensorflow/cc/
    saved_model/util.cc, called from TF Serving's predict_util.cc PreProcessPrediction). A shape
    of 70 dimensions parses in TensorFlow (its limit is 254): the Session refuses it there."""
    request = _malformed(kind)
    code, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    if kind != "rank-70" or api_server.impl == "fdl":
        assert "tensor parsing error: images" in details


def test_broadcast_bounded(api_server) -> None:
    """One typed value fills the whole shape; 8 MiB of pixels that way is served, while a shape
    whose decoded tensor would pass the 2 GiB message limit is refused before any allocation."""
    request = predict_request("tiny", images(1), content=False)
    tensor = request.inputs["images"]
    del tensor.int_val[1:]
    tensor.tensor_shape.dim[0].size = 2**17  # 2^17 x 8 x 8 x 1 bytes: 8 MiB from 1 value
    scores = scores_of(api_server.prediction().Predict(request, timeout=120))
    assert scores.shape == (2**17, 4)
    # Equal rows up to float32 rounding: on CPUs without AVX-512 (AMD EPYC) oneDNN runs the
    # rows of a large batch through kernels that sum in different orders.
    np.testing.assert_allclose(
        scores, np.broadcast_to(scores[0], scores.shape), rtol=1e-5, atol=1e-7
    )
    if api_server.impl != "fdl":  # TF Serving would allocate the 2 GiB and run the model
        return
    tensor.tensor_shape.dim[0].size = 2**25  # 2 GiB, one byte over the bound
    code, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor 'images'" in details and "2147483647 bytes" in details


def test_large_request_beyond_grpc_default(api_server) -> None:
    batch = images(80_000, seed=5)  # 5 MiB of pixels: over gRPC's 4 MiB default
    assert batch.nbytes > 4 * 1024 * 1024
    response = api_server.prediction().Predict(predict_request("tiny", batch), timeout=120)
    assert scores_of(response).shape == (80_000, 4)


def test_metadata(api_server) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "other"
    response = api_server.prediction().GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 5
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["images"].dtype == 4  # DT_UINT8
    assert [d.size for d in signature.inputs["images"].tensor_shape.dim] == [-1, 8, 8, 1]
    assert set(signature.outputs) == {"scores", "classes"}


def test_model_status(api_server) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = api_server.models().GetModelStatus(request, timeout=30)
    states = {s.version: s.state for s in response.model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: available, 2: available}
    # get_model_status_impl.cc reads only the version: with a label (known or not), every one.
    request.model_spec.version_label = "nolabel"
    response = api_server.models().GetModelStatus(request, timeout=30)
    assert sorted(s.version for s in response.model_version_status) == [1, 2]
    request.model_spec.name = "missing"
    code, _ = rpc_error(lambda: api_server.models().GetModelStatus(request, timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND


def test_model_spec_is_checked_before_any_lookup(api_server) -> None:
    # TF Serving: predict_impl.cc, get_model_status_impl.cc and get_model_metadata_impl.cc
    # ("Missing ModelSpec"); server_core.cc ServableRequestFromModelSpec (no name); and
    # ValidateGetModelMetadataRequest (no field), all before the model is looked up.
    prediction, models = api_server.prediction(), api_server.models()
    no_spec = predict_request("tiny", images(1))
    no_spec.ClearField("model_spec")
    no_name = predict_request("tiny", images(1))
    no_name.model_spec.name = ""
    no_fields = get_model_metadata_pb2.GetModelMetadataRequest()
    no_fields.model_spec.name = "missing"
    calls = {
        "Missing ModelSpec": [
            lambda: prediction.Predict(no_spec, timeout=30),
            lambda: models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=30),
            lambda: prediction.GetModelMetadata(
                get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
                timeout=30,
            ),
        ],
        "ModelSpec has no name specified.": [lambda: prediction.Predict(no_name, timeout=30)],
        "must specify at least one metadata_field": [
            lambda: prediction.GetModelMetadata(no_fields, timeout=30)
        ],
    }
    for needle, failing in calls.items():
        for call in failing:
            code, details = rpc_error(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (needle, details)
            assert needle in details


def test_classify_is_refused_clearly(api_server) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    request.input.example_list.examples.add()
    code, details = rpc_error(lambda: api_server.prediction().Classify(request, timeout=30))
    assert code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert details


def test_health_service(api_server) -> None:
    stub = health_pb2_grpc.HealthStub(api_server.channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(api_server) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = set(ProtoReflectionDescriptorDatabase(api_server.channel).get_services())
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= services
