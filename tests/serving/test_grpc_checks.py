"""The order and texts of TF Serving's request checks: model spec resolution, input names,
``output_filter`` and metadata fields (``api_server`` is in conftest.py).

TF Serving's sources (tensorflow/serving @ 9d981c5c unless noted): ``server_core.cc``
(``ServableRequestFromModelSpec``, ``GetModelVersionForLabel``), ``core/manager.h``
(``ServableRequest::DebugString``), ``predict_util.cc`` (``VerifyRequestInputsSize``,
``PreProcessPrediction``), TensorFlow's ``cc/saved_model/util.cc`` (``GetInputValues``) and
``get_model_metadata_impl.cc`` (``ValidateGetModelMetadataRequest``).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2

from harness.tfs import images, predict_request, rpc_error

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
