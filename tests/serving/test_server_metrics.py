"""The model server's Prometheus metrics as TF Serving writes them: requests, Session runs,
warmup and SavedModel loads (a failed load counted too); ``api_server`` is in conftest.py."""

from __future__ import annotations

import pytest
from tensorflow_serving.apis import get_model_metadata_pb2

from harness.prometheus import samples, scrape
from harness.tfs import METRICS_PATH, images, predict_request, rest_json, rpc_error


def test_prometheus_metrics(api_server) -> None:
    """TF Serving's metrics and rules: request_count counts Predict and REST calls by status,
    request_latency times only the successful ones (API "Predict" over gRPC), runtime_latency
    times Session runs, and GetModelMetadata records nothing."""
    stub = api_server.prediction()
    stub.Predict(predict_request("other", images(1)), timeout=30)
    rpc_error(lambda: stub.Predict(predict_request("other", images(1), version=99), timeout=30))
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "other"
    stub.GetModelMetadata(metadata, timeout=30)
    assert rest_json(f"{api_server.rest}/v1/models/other")[0] == 200
    text = scrape(f"{api_server.rest}{METRICS_PATH}")
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


def test_names_no_config_serves_make_no_series(api_server) -> None:
    """Ours: requests for models no config names (a client picks any name, of any length) are
    counted under model_name="", so they cannot grow the metrics without bound (docs/serving.md;
    what TF Serving writes for them is not asserted)."""
    stub = api_server.prediction()
    names = [f"nobody-{index}-{'x' * 200}" for index in range(20)]
    for name in names:
        rpc_error(lambda name=name: stub.Predict(predict_request(name, images(1)), timeout=30))
        assert rest_json(f"{api_server.rest}/v1/models/{name}")[0] == 404
    text = scrape(f"{api_server.rest}{METRICS_PATH}")
    if api_server.impl != "fdl":
        return
    assert "nobody-" not in text
    count = ":tensorflow:serving:request_count"
    assert sum(samples(text, count, model_name="", status="NOT_FOUND")) >= 2 * len(names)


def test_warmup_metrics(api_server) -> None:
    """Each loaded version with a warmup file is timed once, with its record count; a version
    without one records nothing."""
    text = scrape(f"{api_server.rest}{METRICS_PATH}")
    warmed, plain = api_server.root / "tiny" / "1", api_server.root / "tiny" / "2"
    latency = ":tensorflow:serving:model_warmup_latency_count"
    records = ":tensorflow:serving:model_warmup_records_read"
    assert samples(text, latency, model_path=str(warmed), status="OK") == [1]
    assert samples(text, records, model_path=str(warmed), status="OK") == [2]
    assert not samples(text, latency, model_path=str(plain))


def test_load_metrics(api_server) -> None:
    """TensorFlow's SavedModel loader counts each version's load once, with its time."""
    text = scrape(f"{api_server.rest}{METRICS_PATH}")
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
