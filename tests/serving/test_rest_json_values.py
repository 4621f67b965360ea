"""REST JSON values TF Serving takes or refuses in ways a plain reading would not guess
(``json_tensor.cc`` @ 9d981c5c on rapidjson 1.1.0): an int32 given to a narrower integer type
wraps; ``half`` and ``uint16`` have no JSON conversion at all; string bytes that are not UTF-8
are kept. Run against both servers (the real one with ``FDL_TFS_BINARY``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from serving.protocol.rest.rawtext import utf8


@pytest.fixture(scope="module")
def values_server(impl, server_factory, tmp_path_factory):
    """``values``: ``serving_default`` reads a uint8 ``u``, ``int8`` an int8 ``i``, ``half`` a
    half ``h``, ``uint16`` a uint16 ``w`` (each given back as int32 or float), and ``strings``
    hashes each string ``s`` (its exact bytes)."""
    import tensorflow as tf

    class Values(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.uint8)])
        def unsigned(self, u: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"v": tf.cast(u, tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int8)])
        def signed(self, i: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"v": tf.cast(i, tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.half)])
        def half(self, h: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"v": tf.cast(h, tf.float32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.uint16)])
        def wide(self, w: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"v": tf.cast(w, tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def strings(self, s: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"hash": tf.strings.to_hash_bucket_fast(s, 2**62)}

    root = tmp_path_factory.mktemp("values")
    values = Values()
    signatures = {
        "serving_default": values.unsigned,
        "int8": values.signed,
        "half": values.half,
        "uint16": values.wide,
        "strings": values.strings,
    }
    tf.saved_model.save(values, str(root / "values" / "1"), signatures=signatures)
    flags = ["--model_name=values", f"--model_base_path={root / 'values'}"]
    return server_factory(impl, "values", flags)


def _post(server, body: Any) -> tuple[int, Any]:
    """POST ``body`` (bytes as they are, anything else as JSON) to ``values:predict``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"{server.rest}/v1/models/values:predict"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_int32_values_wrap_into_narrower_integer_types(values_server) -> None:
    """AddValueToTensor takes any IsInt value for uint8 and int8 into ``int_val``
    (json_tensor.cc:303-309), which TensorFlow casts into the type when it reads the tensor.
    It was a 400, ``value out of range for uint8``; beyond int32 it still is."""
    assert _post(values_server, {"inputs": [300, -1, 255]}) == (200, {"outputs": [44, 255, 255]})
    assert _post(values_server, {"instances": [256, 7]}) == (200, {"predictions": [0, 7]})
    body = {"signature_name": "int8", "inputs": [200, -129]}
    assert _post(values_server, body) == (200, {"outputs": [-56, 127]})
    status, reply = _post(values_server, {"inputs": [2**31]})
    message = "JSON Value: 2147483648 Type: Number is not of expected type: uint8"
    assert status == 400 and message in reply["error"], reply


@pytest.mark.parametrize(
    ("signature", "dtype", "name"), [("half", "half", "h"), ("uint16", "uint16", "w")]
)
def test_types_without_a_json_conversion(values_server, signature, dtype, name) -> None:
    """``half`` and ``uint16`` have no case in AddValueToTensor: the first value is
    UNIMPLEMENTED, 501 (json_tensor.cc:336-339), an object the type error (:405-408); in the
    ``instances`` format FillTensorMapFromInstancesList wraps the item's error in an
    INVALID_ARGUMENT (:560-588). A tensor without values needs no conversion. Both were
    converted from any number."""
    status, reply = _post(values_server, {"signature_name": signature, "inputs": [1.5, 2]})
    message = f"Conversion of JSON Value: 1.5 to type: {dtype}"
    assert status == 501 and message in reply["error"], reply
    status, reply = _post(values_server, {"signature_name": signature, "instances": [7]})
    assert (
        status == 400
        and f"UNIMPLEMENTED: Conversion of JSON Value: 7 to type: {dtype}" in reply["error"]
    )
    status, reply = _post(values_server, {"signature_name": signature, "inputs": [{"b64": "AA=="}]})
    assert status == 400 and f"Type: Object is not of expected type: {dtype}" in reply["error"]
    empty = _post(values_server, {"signature_name": signature, "inputs": []})
    assert empty == (200, {"outputs": []})
    if values_server.impl == "fdl":  # our REST errors name the input before TF Serving's text
        status, reply = _post(values_server, {"signature_name": signature, "inputs": [True]})
        assert reply == {
            "error": f"input '{name}': Conversion of JSON Value: true to type: {dtype}"
        }


def _hashes(*strings: bytes) -> list[int]:
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(list(strings), 2**62).numpy().tolist()


def test_string_bytes_reach_the_tensor_as_rapidjson_keeps_them(values_server) -> None:
    """rapidjson 1.1.0 without kParseValidateEncodingFlag copies a string's bytes unchecked, so
    bytes that are not UTF-8 reach the tensor as sent, and a lone low surrogate escape is its
    three UTF-8 bytes (reader.h, ParseStringToStream); a lone high one is a parse error. Both
    were a 400."""
    raw = b'{"signature_name": "strings", "inputs": ["a\xffb", "\xc3\xa9\xfe", "ok"]}'
    assert _post(values_server, raw) == (
        200,
        {"outputs": _hashes(b"a\xffb", b"\xc3\xa9\xfe", b"ok")},
    )
    escaped = b'{"signature_name": "strings", "inputs": ["x\\udc80"]}'
    assert _post(values_server, escaped) == (200, {"outputs": _hashes(b"x\xed\xb2\x80")})
    status, reply = _post(values_server, b'{"signature_name": "strings", "inputs": ["\\ud800"]}')
    assert status == 400 and "The surrogate pair in string is invalid" in reply["error"]
    # A byte that is not UTF-8 is no base64 either, and outside a string it is no JSON.
    status, reply = _post(
        values_server, b'{"signature_name": "strings", "inputs": [{"b64": "aGk\xff"}]}'
    )
    assert status == 400 and "Unable to base64 decode" in reply["error"]
    status, reply = _post(values_server, b'{"signature_name": "strings", "inputs": [\xff]}')
    assert status == 400 and "JSON Parse error" in reply["error"]


def test_utf8_of_parsed_strings() -> None:
    assert utf8("é") == b"\xc3\xa9"
    assert utf8("a\udc80") == b"a\xed\xb2\x80"
    assert utf8("\ud800") is None and utf8("\udfff\ud800") is None
