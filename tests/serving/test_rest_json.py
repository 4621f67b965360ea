"""REST JSON → tensor edges, as TF Serving's ``json_tensor.cc`` converts them (tensorflow/serving
@ 9d981c5c; base64 by abseil-cpp's ``absl/strings/escaping.cc`` @ 926f1d05): integers written as
floats or booleans, unpadded or trailing-garbage base64, inputs the signature does not have, and
bytes after the JSON document. The first tests run against both servers; the last ones call the
codec in-process for the dtypes the test model does not have."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from fdl.b64 import b64_unescape
from fdl.wire.tfs_pb2 import DataType
from serving.errors import ServingError
from serving.protocol.rest.codec import parse_predict_body
from serving.protocol.rest.jsontext import debug_string, parse_document


@pytest.fixture(scope="module")
def kinds_server(impl, server_factory, tmp_path_factory):
    """``kinds``: ``serving_default`` doubles an int64 ``n``; ``small`` adds one to an int32
    ``k``; ``strings`` gives the length of each string ``s``."""
    import tensorflow as tf

    class Kinds(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
        def double(self, n: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"twice": n * 2}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
        def small(self, k: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"next": k + 1}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def length(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"length": tf.strings.length(s)}

    root = tmp_path_factory.mktemp("kinds")
    kinds = Kinds()
    signatures = {"serving_default": kinds.double, "small": kinds.small, "strings": kinds.length}
    tf.saved_model.save(kinds, str(root / "kinds" / "1"), signatures=signatures)
    return server_factory(
        impl, "kinds", ["--model_name=kinds", f"--model_base_path={root / 'kinds'}"]
    )


def _post(server, body: Any) -> tuple[int, Any]:
    """POST ``body`` (bytes as they are, anything else as JSON) to ``kinds:predict``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"{server.rest}/v1/models/kinds:predict"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("body", "value", "json_type", "dtype"),
    [
        ({"inputs": [1.0]}, "1.0", "Number", "int64"),
        ({"inputs": [3, True]}, "true", "True", "int64"),
        ({"instances": [2, 2.5]}, "2.5", "Number", "int64"),
        ({"instances": [1e2]}, "100.0", "Number", "int64"),
        ({"signature_name": "small", "inputs": [1.0]}, "1.0", "Number", "int32"),
        ({"signature_name": "small", "inputs": [False]}, "false", "False", "int32"),
        ({"signature_name": "small", "inputs": [2**31]}, "2147483648", "Number", "int32"),
    ],
)
def test_integer_inputs_take_only_integers(kinds_server, body, value, json_type, dtype) -> None:
    """An integer input takes a JSON number only if rapidjson read it as an integer of the
    type's range (AddValueToTensor, json_tensor.cc:303-319: IsInt for int32, IsInt64 for
    int64); ``1.0`` and ``true`` are refused with TypeError's text (:262-267). They were
    accepted and converted."""
    status, reply = _post(kinds_server, body)
    message = f"JSON Value: {value} Type: {json_type} is not of expected type: {dtype}"
    assert status == 400, reply
    assert message in reply["error"]
    if kinds_server.impl == "fdl":  # our REST errors name the input before TF Serving's text
        name = "k" if dtype == "int32" else "n"
        assert reply == {"error": f"input '{name}': {message}"}
    assert _post(kinds_server, {"inputs": [1, -2]}) == (200, {"outputs": [2, -4]})
    assert _post(kinds_server, {"instances": [7]}) == (200, {"predictions": [14]})


@pytest.mark.parametrize(
    ("b64", "length"),
    [
        ("aGk=", 2),  # canonical
        ("aGk", 2),  # no padding: "Always accepting 0 equals signs is an Abseil extension"
        ("aGVsbG8", 5),
        ("aGVs bG8=", 5),  # whitespace is skipped (GET_INPUT, escaping.cc:658-667)
        ("aGk.", 2),  # "." pads as "=" does
    ],
)
def test_b64_decoded_as_abseil_decodes_it(kinds_server, b64: str, length: int) -> None:
    """``{"b64": …}`` goes through absl::Base64Unescape (json_tensor.cc:377-388), which takes
    base64 without padding (escaping.cc:848-863); Python's strict decoder had refused it."""
    body = {"signature_name": "strings", "inputs": [{"b64": b64}]}
    assert _post(kinds_server, body) == (200, {"outputs": [length]})


@pytest.mark.parametrize("b64", ["aGk=xyz", "aGk==", "aGk=aGk=", "a", "aGk!", "====", "aGVsbG8=é"])
def test_bad_b64_is_unable_to_decode(kinds_server, b64: str) -> None:
    """Data after the padding, wrong padding, one character left over or a character outside
    the alphabet: Base64Unescape fails and TF Serving answers "Unable to base64 decode"
    (json_tensor.cc:383-387)."""
    status, reply = _post(kinds_server, {"signature_name": "strings", "inputs": [{"b64": b64}]})
    assert status == 400 and "Unable to base64 decode" in reply["error"], reply
    if kinds_server.impl == "fdl":
        assert reply == {"error": "input 's': Unable to base64 decode"}


def test_inputs_the_signature_does_not_have(kinds_server) -> None:
    """Columnar: FillTensorMapFromInputsMap (json_tensor.cc:609-649) looks up only the
    signature's inputs, so other keys are ignored (they were a 400). Rows: AddInstanceItem
    refuses a key the signature does not have (:448-451), wrapped by
    FillTensorMapFromInstancesList (:561-566)."""
    assert _post(kinds_server, {"inputs": {"n": [4], "extra": [1.5]}}) == (200, {"outputs": [8]})
    status, reply = _post(kinds_server, {"inputs": {"extra": [4]}})
    assert (status, reply) == (400, {"error": "Missing named input: n in 'inputs' object."})
    status, reply = _post(kinds_server, {"instances": [{"n": 4, "extra": 1}]})
    assert status == 400 and "JSON object: does not have named input: extra" in reply["error"]
    if kinds_server.impl == "fdl":
        assert reply["error"] == (
            "Failed to process element: 0 key: extra of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON object: does not have named input: extra"
        )


def test_a_number_beyond_a_double_is_a_parse_error(kinds_server) -> None:
    """rapidjson refuses 1e400 while parsing (kParseErrorNumberTooBig, "Number too big to be
    stored in double."); Python's parser would read it as infinity. Infinity spelled out is
    read, as TF Serving reads it (kParseNanAndInfFlag)."""
    status, reply = _post(kinds_server, b'{"inputs": [1e400]}')
    assert status == 400 and "Number too big to be stored in double" in reply["error"]
    assert math.isinf(parse_document(b"[Infinity, -Infinity]")[0])
    assert parse_document(b"[1e300, 2.5]") == [1e300, 2.5]


@pytest.mark.parametrize(
    "tail", [b" trailing words", b"}", b'{"inputs": [9]}', b"\xff\xfe not even UTF-8", b"\n"]
)
def test_bytes_after_the_document_are_ignored(kinds_server, tail: bytes) -> None:
    """ParseJson parses with kParseStopWhenDoneFlag (json_tensor.cc:483-486): rapidjson stops
    after the first complete value and never reads the rest (it was a 400 parse error)."""
    assert _post(kinds_server, b'{"inputs": [1, 2]}' + tail) == (200, {"outputs": [2, 4]})
    status, reply = _post(kinds_server, b'{"inputs": [1, 2' + tail)
    assert status == 400 and "JSON Parse error" in reply["error"]  # the document itself is cut


def _signature(**inputs: int) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        signature.inputs[name].dtype = dtype
    return signature


def _error(body: Any, signature: meta_graph_pb2.SignatureDef) -> str:
    with pytest.raises(ServingError) as info:
        parse_predict_body(body, signature)
    assert info.value.http_status == 400
    return info.value.message


def test_codec_types_for_each_dtype() -> None:
    """AddValueToTensor (json_tensor.cc:290-339) for the dtypes the model does not have: a
    float input takes any number but no boolean, a bool input only booleans, uint64 only
    integers from 0 to 2^64-1 (IsUint64), a string input only strings or b64 objects."""
    floats = _signature(x=DataType.DT_FLOAT)
    arrays, _ = parse_predict_body({"inputs": [1, 2.5, 10**30]}, floats)
    assert arrays["x"].tolist() == [1.0, 2.5, pytest.approx(1e30, rel=1e-6)]
    message = "input 'x': JSON Value: true Type: True is not of expected type: float"
    assert _error({"inputs": [1.5, True]}, floats) == message
    flags = _signature(x=DataType.DT_BOOL)
    assert parse_predict_body({"inputs": [True, False]}, flags)[0]["x"].tolist() == [True, False]
    message = "input 'x': JSON Value: 1 Type: Number is not of expected type: bool"
    assert _error({"inputs": [True, 1]}, flags) == message
    big = _signature(x=DataType.DT_UINT64)
    assert parse_predict_body({"inputs": [2**64 - 1]}, big)[0]["x"].tolist() == [2**64 - 1]
    assert "JSON Value: -1 Type: Number" in _error({"inputs": [-1]}, big)
    strings = _signature(x=DataType.DT_STRING)
    message = "input 'x': JSON Value: {\n    \"b64\": 5\n} not formatted correctly for base64 data"
    assert _error({"inputs": [{"b64": 5}]}, strings) == message
    message = "input 'x': JSON Value: null Type: Null is not of expected type: string"
    assert _error({"inputs": [None]}, strings) == message


def test_codec_rows_keyed_as_tf_serving_keys_them() -> None:
    """FillTensorMapFromInstancesList (json_tensor.cc:519-607): a missing key names the object
    and the keys wanted; plain values need a one-input signature; objects and values may not
    mix."""
    two = _signature(a=DataType.DT_INT32, b=DataType.DT_STRING)
    message = (
        "Failed to process element: 0 of 'instances' list. JSON object: "
        '{\n    "a": 1\n} keys must be equal to: a,b'
    )
    assert _error({"instances": [{"a": 1}]}, two) == message
    assert _error({"instances": [1]}, two).startswith("instances is a plain list, but expecting")
    message = "Expecting object but got list at item 1 of input list"
    assert _error({"instances": [{"a": 1, "b": "x"}, [1]]}, two) == message
    assert _error({"inputs": [1]}, two).startswith("inputs is a plain value/list, but expecting")
    assert _error({}, two) == "Missing 'inputs' or 'instances' key"
    # A signature without inputs (TF Serving reads past the end of its map): a 400, not a 500.
    none = _signature()
    for body in ({"instances": [1]}, {"inputs": [1]}, {"inputs": {"a": 1}}):
        assert _error(body, none) == "the signature has no inputs to fill from this request"


def test_debug_string_and_b64_reader() -> None:
    """JsonValueToDebugString (json_tensor.cc:229-236): rapidjson's PrettyWriter with single-line
    arrays, cut once 256 bytes are written; its Writer prints doubles through Prettify (a whole
    number gets ".0") and stops at a NaN. Base64UnescapeInternal's rules (escaping.cc:634-866)."""
    assert debug_string([1, 2.0, "a\n", None]) == '[1, 2.0, "a\\n", null]'
    assert (
        debug_string({"a": [1, {"b": True}]})
        == '{\n    "a": [1, {\n            "b": true\n        }]\n}'
    )
    assert (
        debug_string([1e21, 1e20, 1.5e-7, 0.001])
        == "[1e21, 100000000000000000000.0, 1.5e-7, 0.001]"
    )
    assert debug_string([1, float("nan"), 2]) == "[1, "
    assert len(debug_string(list(range(1000)))) < 270
    assert b64_unescape("aGk\n=") == b"hi" and b64_unescape("aGk= \n") == b"hi"
    assert b64_unescape("") == b"" and b64_unescape("aGk=\x00") is None
