"""Conformance of the REST API (status, metadata, rows and columns, errors), called as a plain
HTTP client would; ``api_server`` is in conftest.py."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

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
    status, body = rest_json(f"{api_server.rest}/v1/models/tiny/labels/nolabel")
    assert status == 200  # a status request reads no label (get_model_status_impl.cc)
    assert sorted(v["version"] for v in body["model_version_status"]) == ["1", "2"]


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
    # Over REST an unknown signature stays INVALID_ARGUMENT, answered while reading the JSON
    # (http_rest_api_handler.cc:236-238 @ 9d981c5c); gRPC says FAILED_PRECONDITION.
    status, body = rest_json(url, {"signature_name": "nope", "instances": images(1).tolist()})
    assert status == 400
    assert body["error"] == 'Serving signature name: "nope" not found in signature def'


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


def _post_nested(url: str, prefix: str, leaf: str, depth: int, suffix: str) -> tuple[int, Any]:
    """POST ``prefix + [[…leaf…]] + suffix``, lists ``depth`` deep (written as text: too deep
    for ``json.dumps``); the status and the JSON answer."""
    body = f"{prefix}{'[' * depth}{leaf}{']' * depth}{suffix}".encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def words_server(impl, server_factory, tmp_path_factory):
    """A server with ``words``: a string input ``s`` of shape [batch, n], ``length`` out."""
    import tensorflow as tf

    class Words(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="s")])
        def serve(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"length": tf.strings.length(s)}

    root = tmp_path_factory.mktemp("words")
    words = Words()
    tf.saved_model.save(
        words, str(root / "words" / "1"), signatures={"serving_default": words.serve}
    )
    return server_factory(
        impl, "words", ["--model_name=words", f"--model_base_path={root / 'words'}"]
    )


def test_rest_ragged_or_deep_strings_are_a_400(words_server) -> None:
    """Ragged or deeply nested string lists are refused as TF Serving refuses them (they were a
    500): json_tensor.cc's FillTensorProto (:421-427, "Encountered list at unexpected size") and,
    per instance of the row format, AddInstanceItem (:462-464, "Expecting tensor size");
    tensorflow/serving @ 9d981c5c."""
    url = f"{words_server.rest}/v1/models/words:predict"
    status, body = rest_json(url, {"inputs": {"s": [["ab", "c"]]}})
    assert (status, body) == (200, {"outputs": [[2, 1]]})
    status, body = rest_json(url, {"inputs": {"s": [["a"], ["b", "c"]]}})
    assert status == 400
    assert "Encountered list at unexpected size: 2 at level: 1 expected size: 1" in body["error"]
    status, body = rest_json(url, {"instances": [["a"], ["b", "c"]]})
    assert status == 400 and "Expecting tensor size: 1 but got: 2" in body["error"]
    # 70 deep: TF Serving builds a rank-70 tensor that the signature refuses; 1000 deep: ours
    # refuses anything past NumPy's 64 dimensions (TF Serving's limit is TensorShape's 254).
    for depth in (70, 1000) if words_server.impl == "fdl" else (70,):
        status, body = _post_nested(url, '{"inputs": {"s": ', '"x"', depth, "}}")
        assert status == 400, (depth, body)
        if words_server.impl == "fdl":
            assert "nested more than 64 deep" in body["error"]


def test_rest_ragged_or_deep_numbers_are_a_400(api_server) -> None:
    """The same checks for numbers, in both formats (json_tensor.cc:421-427 and :462-464)."""
    url = f"{api_server.rest}/v1/models/tiny:predict"
    ragged = images(2).tolist()
    ragged[1][3].append([0])  # a row of 9 pixels where 8 are expected
    status, body = rest_json(url, {"inputs": {"images": ragged}})
    assert status == 400
    assert "Encountered list at unexpected size: 9 at level: 2 expected size: 8" in body["error"]
    status, body = rest_json(url, {"instances": [images(1).tolist()[0], [[[0]]]]})
    assert status == 400 and "Expecting tensor size: 64 but got: 1" in body["error"]
    for depth in (70, 1000) if api_server.impl == "fdl" else (70,):
        status, body = _post_nested(url, '{"instances": ', "1", depth, "}")
        assert status == 400, (depth, body)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models/ti%6Ey", 200),  # the name is percent-decoded (DecodeArg)
        ("GET", "/V1/MODELS/tiny/VERSIONS/1", 200),  # the patterns are (?i)
        ("GET", "/v1/models/tiny/", 400),  # matched in full: no trailing slash
        ("GET", "/v1/models", 400),  # "Missing model name in request."
        ("GET", "/v1/models/tiny:predict", 400),
        ("GET", "/v1/models/tiny/versions/99999999999999999999", 400),  # not an int64
        ("POST", "/v1/models/tiny", 400),
        ("POST", "/v1/models/tiny:foo", 400),
        ("POST", "/v1/models/tiny:PREDICT", 400),  # matched (?i), then compared exactly
        ("DELETE", "/v1/models/tiny", 400),
        ("PUT", "/v1/models/tiny:predict", 400),
    ],
)
def test_rest_paths_are_routed_as_tf_serving_routes_them(
    api_server, method: str, path: str, status: int
) -> None:
    """http_rest_api_util.cc's patterns and http_rest_api_handler.cc's dispatch: every request
    under /v1/ that they do not route is 400 "Malformed request: METHOD PATH"."""
    body = json.dumps({"instances": images(1).tolist()}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", api_server.rest_port, timeout=30)
    try:
        connection.request(method, path, body if method != "GET" else None)
        response = connection.getresponse()
        reply = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == status, reply
    if status == 400 and "Missing" not in reply["error"] and "convert" not in reply["error"]:
        assert reply["error"] == f"Malformed request: {method} {path}"
