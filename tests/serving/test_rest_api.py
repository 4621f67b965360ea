"""Conformance of the REST API (status, metadata, rows and columns, errors), called as a plain
HTTP client would; ``api_server`` is in conftest.py."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from harness.tfs import expected_scores, images, rest_json


def test_rest_status_and_metadata(api_server) -> None:
    status, body = rest_json(f"{api_server.rest}/v1/models/tiny/versions/1")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["version"] == "1"
    status, body = rest_json(f"{api_server.rest}/v1/models/other/metadata")
    assert status == 200
    assert body["model_spec"]["version"] == "5"
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["images"]["dtype"] == "DT_UINT8"
    status, body = rest_json(f"{api_server.rest}/v1/models/missing")
    assert status == 404 and "error" in body


def test_rest_predict_rows_and_columns(api_server, model_stock) -> None:
    batch = images(2, seed=21)
    expected = expected_scores(model_stock.versions["a"], batch)
    url = f"{api_server.rest}/v1/models/tiny/versions/1:predict"
    status, body = rest_json(url, {"instances": batch.tolist()})
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 2 and rows[0]["classes"] == ["0", "1", "2", "3"]
    np.testing.assert_allclose([r["scores"] for r in rows], expected, rtol=1e-5)
    status, body = rest_json(url, {"inputs": {"images": batch.tolist()}})
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"]["scores"], expected, rtol=1e-5)


def test_rest_errors(api_server) -> None:
    url = f"{api_server.rest}/v1/models/tiny:predict"
    status, body = rest_json(url, {"instances": [[1, 2]]})
    assert status == 400
    if api_server.impl == "fdl":
        assert "images" in body["error"]
    status, body = rest_json(url, {"nothing": 1})
    assert status == 400 and "error" in body
    status, body = rest_json(f"{api_server.rest}/v1/models/tiny/labels/nolabel:predict",
                         {"instances": images(1).tolist()})  # fmt: skip
    assert status == 400 and "nolabel" in body["error"]
    status, _ = rest_json(f"{api_server.rest}/v1/models/missing:predict", {"instances": [1]})
    assert status == 404


def test_rest_reads_nan_as_tf_serving_does(api_server) -> None:
    """TF Serving's JSON reader accepts NaN and Infinity: such a body is a typed 400 for a uint8
    input, not a parse error (the fast strict parser falls back to the lenient one)."""
    url = f"{api_server.rest}/v1/models/tiny:predict"
    batch = images(1).tolist()
    batch[0][0][0][0] = float("nan")  # json.dumps writes it as NaN
    status, body = rest_json(url, {"instances": batch})
    assert status == 400, body
    if api_server.impl == "fdl":
        assert "JSON Parse error" not in body["error"] and "images" in body["error"], body
    status, body = rest_json(url, {"instances": images(1).tolist()})
    assert status == 200, body


def test_rest_deeply_nested_body_is_a_400(api_server) -> None:
    """Brackets nested beyond any parser's recursion limit get a 400 that says so, never a 500."""
    request = urllib.request.Request(
        f"{api_server.rest}/v1/models/tiny:predict", data=b'{"instances": ' + b"[" * 50_000
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    if api_server.impl == "fdl":
        assert "JSON Parse error" in json.loads(refused.value.read())["error"]
    deep: object = 1
    for _ in range(70):  # past NumPy's 64 dimensions
        deep = [deep]
    status, body = rest_json(f"{api_server.rest}/v1/models/tiny:predict", {"instances": deep})
    assert status == 400, body
