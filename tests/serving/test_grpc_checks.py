"""The order and texts of TF Serving's request checks: model spec resolution, input names,
``output_filter`` and metadata fields (``api_server`` is in conftest.py).

TF Serving's sources (tensorflow/serving @ 9d981c5c unless noted): ``server_core.cc``
(``ServableRequestFromModelSpec``, ``GetModelVersionForLabel``), ``core/manager.h``
(``ServableRequest::DebugString``), ``predict_util.cc`` (``VerifyRequestInputsSize``,
``PreProcessPrediction``), TensorFlow's ``cc/saved_model/util.cc`` (``GetInputValues``) and
``get_model_metadata_impl.cc`` (``ValidateGetModelMetadataRequest``).

Bytes that are no request message, sent to every gRPC service of the model server: INTERNAL
(as TF Serving's gRPC C++ server answers a request it cannot parse), with a short message that
names no Python class; the REST front end's answer to bytes that are no JSON names none either.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterable

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2

from harness.tfs import Server, images, predict_request, rpc_error

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def _predict(api_server, request):
    return rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))


@pytest.mark.parametrize(
    ("name", "version", "label", "code", "details"),
    [
        ("missing", 9, None, NOT_FOUND, "Servable not found for request: Specific(missing, 9)"),
        ("missing", None, None, NOT_FOUND, "Servable not found for request: Latest(missing)"),
        # A label is looked up before the model, so an unknown model's is an unknown label.
        ("missing", None, "stable", INVALID, "Unrecognized servable version label: stable"),
        # An empty label is a label (version_choice is set), not "the newest version".
        ("tiny", None, "", INVALID, "Unrecognized servable version label: "),
    ],
    ids=["unknown-model-version", "unknown-model", "unknown-model-label", "empty-label"],
)
def test_model_spec_resolution(api_server, name, version, label, code, details) -> None:
    request = predict_request(name, images(1), version=version, label=label)
    assert _predict(api_server, request) == (code, details)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.CopyFrom(request.model_spec)
    call = lambda: api_server.prediction().GetModelMetadata(metadata, timeout=30)  # noqa: E731
    assert rpc_error(call) == (code, details)


def test_input_named_wrong_with_the_right_count(api_server) -> None:
    """One input under another name: the counts agree, so TF Serving reports the signature's
    input missing from the request (it was "input size does not match signature: 1!=1")."""
    request = predict_request("tiny", images(1))
    request.inputs["pixels"].CopyFrom(request.inputs.pop("images"))
    code, details = _predict(api_server, request)
    assert code == INVALID
    assert details == (
        "Signature input alias: images(feed name: serving_default_images:0) not found in "
        "request and no default value provided. Inputs expected to be in the request "
        "{pixels}, or default input alias set: "
    )


def test_input_names_are_checked_before_tensors_are_parsed(api_server) -> None:
    request = predict_request("tiny", images(1))
    request.inputs["images"].tensor_content = b"\0" * 7  # does not parse
    request.inputs["extra"].CopyFrom(request.inputs["images"])
    code, details = _predict(api_server, request)
    assert code == INVALID
    assert details.startswith("input size does not match signature: 2!=1"), details


def test_output_filter_checks(api_server) -> None:
    request = predict_request("tiny", images(1))
    request.output_filter[:] = ["scores", "classes", "scores"]
    assert _predict(api_server, request) == (INVALID, "duplicate output tensor alias: scores")
    # The filter is checked before the Session would refuse the input's dtype.
    request.inputs["images"].dtype = 1  # DT_FLOAT
    request.inputs["images"].tensor_content = np.zeros((1, 8, 8, 1), np.float32).tobytes()
    request.output_filter[:] = ["scores", "nope"]
    code, details = _predict(api_server, request)
    assert code == INVALID
    assert details.startswith("output tensor alias not found in signature: nope"), details
    request.output_filter[:] = ["scores"]
    code, details = _predict(api_server, request)
    assert code == INVALID and "uint8" in details and "float" in details, details


def test_metadata_fields_are_checked_before_the_spec(api_server) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.metadata_field.append("labels")
    request.model_spec.name = "missing"
    call = lambda: api_server.prediction().GetModelMetadata(request, timeout=30)  # noqa: E731
    assert rpc_error(call) == (INVALID, "Metadata field labels is not supported")
    request.model_spec.name = ""
    del request.metadata_field[:]
    code, details = rpc_error(call)
    assert (code, details) == (
        INVALID,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )


GARBAGE = [b"\xff\xff", b"\x0a\x05ab"]  # a bad tag; a field shorter than its length says
UNARY = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/grpc.health.v1.Health/Check",
]


def _raw(server: Server, path: str) -> Callable[..., bytes]:
    """The unary method at ``path``, called with bytes as they are (no serializer)."""
    return server.channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def _assert_parse_failure(code: grpc.StatusCode, details: str | None, impl: str) -> None:
    assert code == grpc.StatusCode.INTERNAL, (code, details)
    if impl == "fdl":  # TF Serving sends an empty message
        assert details is not None and details.startswith("Failed to parse the request as a ")
    assert "<class" not in (details or "") and "Error" not in (details or ""), details


@pytest.mark.parametrize("payload", GARBAGE, ids=["bad-tag", "short-field"])
@pytest.mark.parametrize("path", UNARY, ids=lambda p: p.rsplit("/", 1)[1])
def test_unary_garbage_is_internal(
    api_server: Server, impl: str, path: str, payload: bytes
) -> None:
    call = _raw(api_server, path)
    code, details = rpc_error(lambda: call(payload, timeout=30))
    _assert_parse_failure(code, details, impl)


@pytest.mark.parametrize(
    ("path", "open_call"),
    [
        (
            "/grpc.health.v1.Health/Watch",
            lambda channel, path, payload: channel.unary_stream(path)(payload, timeout=30),
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            lambda channel, path, payload: channel.stream_stream(path)(iter([payload]), timeout=30),
        ),
    ],
    ids=["health-watch", "reflection"],
)
def test_streaming_garbage_is_internal(
    api_server: Server, impl: str, path: str, open_call: Callable[..., Iterable[object]]
) -> None:
    def drain() -> None:
        for _ in open_call(api_server.channel, path, b"\xff\xff"):
            pass

    code, details = rpc_error(drain)
    _assert_parse_failure(code, details, impl)


def test_the_services_still_answer_after_garbage(api_server: Server) -> None:
    call = _raw(api_server, UNARY[0])
    assert rpc_error(lambda: call(b"\xff\xff", timeout=30))[0] == grpc.StatusCode.INTERNAL
    stub = api_server.prediction()  # type: ignore[no-untyped-call]
    response = stub.Predict(predict_request("tiny", images(1)), timeout=30)
    assert response.model_spec.name == "tiny"
    # A valid message of the wrong shape still gets the servicer's own answer.
    code, _ = rpc_error(lambda: call(b"", timeout=30))  # an empty PredictRequest: no ModelSpec
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("body", [b"\xff\xff", b"{", b"[" * 5000], ids=["bytes", "cut", "deep"])
def test_rest_garbage_names_no_class(api_server: Server, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", api_server.rest_port, timeout=30)
    try:
        connection.request("POST", "/v1/models/tiny:predict", body=body)
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    assert status == 400, (status, raw)
    error = json.loads(raw)["error"]
    assert "<class" not in error and "Error:" not in error, error
