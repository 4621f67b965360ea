"""Conformance of the gRPC and REST APIs, with the official tensorflow_serving stubs as client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
)

from harness.prometheus import samples
from harness.tfs import (
    expected_scores,
    images,
    model_config,
    predict_request,
    scores_of,
)

METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def api_server(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("api-models")
    for version, kind in ((1, "a"), (2, "b")):
        model_stock.install(kind, root / "tiny", version)
    model_stock.install("c", root / "other", 5)
    config = root / "models.config"
    config.write_text(
        model_config(
            {"tiny": root / "tiny", "other": root / "other"},
            {"tiny": "    model_version_policy { all {} }\n"},
        )
    )
    monitoring = root / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    server = server_factory(
        impl,
        "api",
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={monitoring}",
            "--enable_grpc_healthcheck_service=true",
        ],
    )
    server.root = root
    return server


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


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
    code, details = _code(lambda: api_server.prediction().Predict(request, timeout=30))
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
        (
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nope",
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
    got, details = _code(lambda: api_server.prediction().Predict(request, timeout=30))
    assert got == code, details
    assert needle in details


def test_wrong_dtype_with_typed_values(api_server) -> None:
    import tensorflow as tf

    request = predict_request("tiny", images(1))
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images(1).astype(np.float32)))
    code, details = _code(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    if api_server.impl == "fdl":  # TF Serving's own text comes from Session::Run
        assert "images" in details


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
    request.model_spec.name = "missing"
    code, _ = _code(lambda: api_server.models().GetModelStatus(request, timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND


def test_classify_is_refused_clearly(api_server) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "tiny"
    request.input.example_list.examples.add()
    code, details = _code(lambda: api_server.prediction().Classify(request, timeout=30))
    assert code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT)
    assert details


def test_health_service(api_server) -> None:
    stub = health_pb2_grpc.HealthStub(api_server.channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def _http(url: str, body: object | None = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            raw = reply.read()
            status = reply.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def test_rest_status_and_metadata(api_server) -> None:
    status, body = _http(f"{api_server.rest}/v1/models/tiny/versions/1")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["version"] == "1"
    status, body = _http(f"{api_server.rest}/v1/models/other/metadata")
    assert status == 200
    assert body["model_spec"]["version"] == "5"
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["images"]["dtype"] == "DT_UINT8"
    status, body = _http(f"{api_server.rest}/v1/models/missing")
    assert status == 404 and "error" in body


def test_rest_predict_rows_and_columns(api_server, model_stock) -> None:
    batch = images(2, seed=21)
    expected = expected_scores(model_stock.versions["a"], batch)
    url = f"{api_server.rest}/v1/models/tiny/versions/1:predict"
    status, body = _http(url, {"instances": batch.tolist()})
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 2 and rows[0]["classes"] == ["0", "1", "2", "3"]
    np.testing.assert_allclose([r["scores"] for r in rows], expected, rtol=1e-5)
    status, body = _http(url, {"inputs": {"images": batch.tolist()}})
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["scores"], expected, rtol=1e-5)


def test_rest_errors(api_server) -> None:
    url = f"{api_server.rest}/v1/models/tiny:predict"
    status, body = _http(url, {"instances": [[1, 2]]})
    assert status == 400
    if api_server.impl == "fdl":
        assert "images" in body["error"]
    status, body = _http(url, {"nothing": 1})
    assert status == 400 and "error" in body
    status, body = _http(f"{api_server.rest}/v1/models/tiny/labels/nolabel:predict",
                         {"instances": images(1).tolist()})  # fmt: skip
    assert status == 400 and "nolabel" in body["error"]
    status, _ = _http(f"{api_server.rest}/v1/models/missing:predict", {"instances": [1]})
    assert status == 404


def test_prometheus_metrics(api_server) -> None:
    """TF Serving's metrics and rules: request_count counts Predict and REST calls by status,
    request_latency times only the successful ones (API "Predict" over gRPC), runtime_latency
    times Session runs, and GetModelMetadata records nothing."""
    stub = api_server.prediction()
    stub.Predict(predict_request("other", images(1)), timeout=30)
    _code(lambda: stub.Predict(predict_request("other", images(1), version=99), timeout=30))
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "other"
    stub.GetModelMetadata(metadata, timeout=30)
    assert _http(f"{api_server.rest}/v1/models/other")[0] == 200
    with urllib.request.urlopen(f"{api_server.rest}{METRICS_PATH}", timeout=30) as reply:
        text = reply.read().decode()
    count = ":tensorflow:serving:request_count"
    ok = sum(samples(text, count, model_name="other", status="OK"))
    assert ok >= 2 and sum(samples(text, count, model_name="other", status="NOT_FOUND")) >= 1
    latency = ":tensorflow:serving:request_latency_count"
    assert sum(samples(text, latency, model_name="other")) == ok  # failures are not timed
    assert samples(text, latency, model_name="other", API="Predict", entrypoint="GRPC")[0] >= 1
    assert samples(text, latency, model_name="other", API="", entrypoint="REST")[0] >= 1
    assert not samples(text, latency, API="GetModelMetadata")
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert samples(text, runtime, model_name="other", API="Predict", runtime="TF1")[0] >= 1


def test_warmup_metrics(api_server) -> None:
    """Each loaded version with a warmup file is timed once, with its record count; a version
    without one records nothing."""
    with urllib.request.urlopen(f"{api_server.rest}{METRICS_PATH}", timeout=30) as reply:
        text = reply.read().decode()
    warmed, plain = api_server.root / "tiny" / "1", api_server.root / "tiny" / "2"
    latency = ":tensorflow:serving:model_warmup_latency_count"
    records = ":tensorflow:serving:model_warmup_records_read"
    assert samples(text, latency, model_path=str(warmed), status="OK") == [1]
    assert samples(text, records, model_path=str(warmed), status="OK") == [2]
    assert not samples(text, latency, model_path=str(plain))


def test_load_metrics(api_server) -> None:
    """TensorFlow's SavedModel loader counts each version's load once, with its time."""
    with urllib.request.urlopen(f"{api_server.rest}{METRICS_PATH}", timeout=30) as reply:
        text = reply.read().decode()
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    latency = ":tensorflow:cc:saved_model:load_latency"
    for version in ("tiny/1", "tiny/2", "other/5"):
        path = str(api_server.root / version)
        assert samples(text, attempts, model_path=path, status="success") == [1], version
        assert not samples(text, attempts, model_path=path, status="fail")
        assert samples(text, latency, model_path=path)[0] > 0


def test_failed_load_is_counted(model_stock, tmp_path) -> None:
    """A version whose SavedModel cannot be read counts as a failed attempt; a good one as a
    success, each under its own version directory."""
    from serving.loading import load_version
    from serving.metrics import Metrics
    from serving.records import ManagerOptions, VersionRecord

    metrics = Metrics()
    options = ManagerOptions(enable_warmup=False, on_load=metrics.record_load)
    good = VersionRecord(version=1, path=model_stock.versions["a"])
    load_version("m", good, options).close()
    bad = VersionRecord(version=2, path=model_stock.versions["broken"])
    with pytest.raises(Exception, match=r"SavedModel|saved_model|parse"):
        load_version("m", bad, options)
    text = metrics.exposition().decode()
    attempts = ":tensorflow:cc:saved_model:load_attempt_count"
    assert samples(text, attempts, model_path=str(good.path), status="success") == [1]
    assert samples(text, attempts, model_path=str(bad.path), status="fail") == [1]
    assert not samples(text, attempts, model_path=str(bad.path), status="success")
    latency = ":tensorflow:cc:saved_model:load_latency"
    assert samples(text, latency, model_path=str(good.path))[0] > 0
    assert len(samples(text, latency, model_path=str(bad.path))) == 1  # timed too, as in TF


def test_reflection_lists_the_services(api_server) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = set(ProtoReflectionDescriptorDatabase(api_server.channel).get_services())
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= services
