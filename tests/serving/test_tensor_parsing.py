"""Request tensors are parsed as TensorFlow's ``Tensor::FromProto`` parses them (what TF Serving
calls on every Predict input), with TensorFlow's own parser, ``tf.io.parse_tensor``, as the
reference: typed value counts of 0, 1, fewer, exact and more, ``tensor_content`` of any length
(strings included), both set, and the shape edge cases."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2

from fdl.tensors import MAX_BROADCAST_BYTES
from harness.tfs import images, predict_request, rpc_error, scores_of
from serving.errors import ServingError
from serving.predict import to_numpy

# DataType -> its typed field and seven values to take a prefix of (int_val holds values that
# TensorFlow wraps into the narrower types; half_val holds float16 bit patterns).
_VALUES: dict[int, tuple[str, list]] = {
    types_pb2.DT_FLOAT: ("float_val", [1.5, -2.0, 3.25, 0.0, 1e30, -7.0, 9.5]),
    types_pb2.DT_DOUBLE: ("double_val", [1e300, -2.5, 3.0, 0.0, 5.0, -6.0, 7.0]),
    types_pb2.DT_INT32: ("int_val", [7, -(2**31), 2**31 - 1, 0, 5, -6, 9]),
    types_pb2.DT_UINT8: ("int_val", [300, -1, 255, 0, 5, 6, 7]),
    types_pb2.DT_INT16: ("int_val", [70000, -40000, 3, 0, 5, 6, 7]),
    types_pb2.DT_INT8: ("int_val", [-129, 128, 3, 0, 5, 6, 7]),
    types_pb2.DT_UINT16: ("int_val", [-1, 70000, 3, 0, 5, 6, 7]),
    types_pb2.DT_INT64: ("int64_val", [2**62, -(2**63), 3, 0, 5, 6, 7]),
    types_pb2.DT_UINT32: ("uint32_val", [2**32 - 1, 2, 3, 0, 5, 6, 7]),
    types_pb2.DT_UINT64: ("uint64_val", [2**64 - 1, 2, 3, 0, 5, 6, 7]),
    types_pb2.DT_BOOL: ("bool_val", [True, False, True, True, False, True, False]),
    types_pb2.DT_HALF: ("half_val", [15360, 70000, 0x7C00, -1, 16384, 1, 2]),
    types_pb2.DT_STRING: ("string_val", [b"a", b"", b"ccc", b"\0d", b"e", b"f", b"g"]),
}


def _proto(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    for field, value in fields.items():
        if field in ("tensor_content", "version_number"):
            setattr(proto, field, value)
        elif field == "unknown_rank":
            proto.tensor_shape.unknown_rank = value
        else:
            getattr(proto, field).extend(value)
    return proto


def _agrees_with_tensorflow(proto: tensor_pb2.TensorProto) -> None:
    """Ours decodes what TensorFlow decodes, to the same values, and refuses what it refuses."""
    try:
        parsed = tf.io.parse_tensor(proto.SerializeToString(), tf.as_dtype(proto.dtype))
        expected = np.asarray(parsed.numpy())  # a scalar string comes back as bytes
    except tf.errors.InvalidArgumentError:
        with pytest.raises(ServingError) as info:
            to_numpy(proto, "x")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.message.startswith("tensor parsing error: x ("), info.value.message
        return
    got = to_numpy(proto, "x")
    assert got.shape == expected.shape
    if proto.dtype == types_pb2.DT_STRING:
        assert got.dtype == object and got.ravel().tolist() == expected.ravel().tolist()
    else:
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("count", [0, 1, 2, 6, 7])  # none, one, fewer, exact, more than 6
@pytest.mark.parametrize("dtype", list(_VALUES), ids=types_pb2.DataType.Name)
def test_typed_value_counts_follow_tensorflow(dtype: int, count: int) -> None:
    """Fewer values than the shape's are filled with the last one, none with zeros; more are
    ignored; an empty shape reads none of them."""
    field, values = _VALUES[dtype]
    for shape in ([2, 3], [6], []):
        _agrees_with_tensorflow(_proto(dtype, shape, **{field: values[:count]}))
    _agrees_with_tensorflow(_proto(dtype, [0, 4], **{field: values[:count]}))


@pytest.mark.parametrize(
    "content", [b"", b"\0" * 3, b"\0" * 8, b"\1" * 24, b"\2" * 25, b"\3" * 28, b"\4" * 32]
)
@pytest.mark.parametrize("dtype", [types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_INT64])
def test_tensor_content_must_be_exactly_the_shapes(dtype: int, content: bytes) -> None:
    """tensor_content of the wrong length is refused (never filled or cut), wins over typed
    values when set, and is not read for an empty shape."""
    field = _VALUES[dtype][0]
    for shape in ([3], [2, 2], [0], [4, 0]):
        _agrees_with_tensorflow(_proto(dtype, shape, tensor_content=content))
        _agrees_with_tensorflow(_proto(dtype, shape, tensor_content=content, **{field: [1, 2]}))


@pytest.mark.parametrize(
    "content",
    [
        b"\2\3abcde",  # "ab", "cde"
        b"\2\3abcdeXX",  # bytes left over
        b"\2\3abcd",  # bytes missing
        b"\2",  # one length for two strings
        b"\0\0",  # two empty strings
        b"\x80\x80\x80\x80\x00\0",  # a five-byte varint (0) then 0
        b"\x80\x80\x80\x80\x80\x00\0",  # a six-byte varint
        b"\x80\x80\x80\x80\x10\0",  # 2^32: bits past 32 fall off, leaving 0
        b"\xff\xff\xff\xff\x0f\0",  # 2^32 - 1 bytes that are not there
    ],
)
def test_string_tensor_content_is_tensorflows_encoded_list(content: bytes) -> None:
    _agrees_with_tensorflow(_proto(types_pb2.DT_STRING, [2], tensor_content=content))
    _agrees_with_tensorflow(
        _proto(types_pb2.DT_STRING, [2], tensor_content=content, string_val=[b"x", b"y"])
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12), st.integers(0, 4))
def test_string_tensor_content_on_any_bytes(content: bytes, count: int) -> None:
    _agrees_with_tensorflow(_proto(types_pb2.DT_STRING, [count], tensor_content=content))


def _encoded_list(strings: list[bytes], padded: dict[int, int] | None = None) -> bytes:
    """TensorFlow's encoded string list: the lengths as varints, then the bytes; the length of
    string ``i`` written in ``padded[i]`` bytes (continuation bytes of 0 bits), if given."""
    lengths = bytearray()
    for i, text in enumerate(strings):
        size, varint = len(text), bytearray()
        while size > 0x7F:
            varint.append(size & 0x7F | 0x80)
            size >>= 7
        varint.append(size)
        while len(varint) < (padded or {}).get(i, 0):
            varint[-1] |= 0x80
            varint.append(0)
        lengths += varint
    return bytes(lengths) + b"".join(strings)


def test_long_string_lists_in_tensor_content_follow_tensorflow() -> None:
    """Lists whose lengths take many chunks of the decoder's scan, with varints of one to five
    bytes across the chunks' ends; broken far from the start (a six-byte varint, a byte left over
    or missing, one length fewer than the shape has)."""
    rng = np.random.default_rng(5)
    sizes = rng.choice(
        [0, 1, 2, 127, 128, 300, 20000], size=60000, p=[0.2, 0.3, 0.2, 0.1, 0.1, 0.0999, 0.0001]
    )
    strings = [bytes([i % 251]) * int(n) for i, n in enumerate(sizes)]
    padded = {i: 5 for i in range(30000, 60000, 7)}
    content = _encoded_list(strings, padded)
    count = len(strings)
    _agrees_with_tensorflow(_proto(types_pb2.DT_STRING, [count], tensor_content=content))
    _agrees_with_tensorflow(_proto(types_pb2.DT_STRING, [count // 4, 4], tensor_content=content))
    for bad in (
        content + b"X",
        content[:-1],
        _encoded_list(strings[:-1]),
        _encoded_list(strings, padded | {45000: 6}),
    ):
        _agrees_with_tensorflow(_proto(types_pb2.DT_STRING, [count], tensor_content=bad))


def test_many_tiny_strings_cost_what_the_bound_counts() -> None:
    """A string tensor costs at most what the decode bound counts per element (read off its
    refusal), in ``tensor_content`` or ``string_val`` (also with more values than the shape
    has): no count-sized NumPy temporaries, offset lists or lists of all the bytes objects."""
    import tracemalloc

    with pytest.raises(ServingError) as info:
        to_numpy(_proto(types_pb2.DT_STRING, [2**40]), "x")
    charged = int(info.value.message.split(" would take ")[1].split()[0]) // 2**40
    count = 300_000
    for tensor in (
        _proto(types_pb2.DT_STRING, [count], tensor_content=b"\2" * count + b"ab" * count),
        _proto(types_pb2.DT_STRING, [count], string_val=[b"ab"] * count),
        _proto(types_pb2.DT_STRING, [count], string_val=[b"ab"] * (count + 1000)),
        _proto(types_pb2.DT_STRING, [count], tensor_content=b"\1" * count + b"a" * count),
    ):
        tensor = tensor_pb2.TensorProto.FromString(tensor.SerializeToString())
        tracemalloc.start()
        try:
            decoded = to_numpy(tensor, "x")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert decoded.shape == (count,) and decoded[0] == decoded[-1] in (b"a", b"ab")
        assert peak <= 1.25 * charged * count, (peak / count, charged)


@pytest.mark.parametrize(
    ("shape", "extra"),
    [
        ([2], {"unknown_rank": True}),  # TensorShape ignores unknown_rank when dims are given
        ([], {"unknown_rank": True}),
        ([2], {"version_number": 7}),
        ([-1], {}),
        ([-1, 0], {}),
        ([2**40, 2**40, 0], {}),  # the running product overflows before the 0
        ([2**62, 2, 0], {}),
        ([0, 2**30, 2**30], {}),  # empty: NumPy holds it (2^31 x 2^31 it cannot)
    ],
)
def test_shape_edge_cases(shape: list[int], extra: dict) -> None:
    _agrees_with_tensorflow(_proto(types_pb2.DT_FLOAT, shape, float_val=[1.0, 2.0], **extra))


def test_filling_stays_bounded() -> None:
    """A tensor not sent whole may take at most 64 MiB once filled, whatever number of values
    it was sent; a 13-byte tensor of 2^40 values is refused by the 2 GiB bound, unallocated."""
    import tracemalloc

    floats = MAX_BROADCAST_BYTES // 4
    for sent in ([], [1.0], [1.0, 2.0]):
        filled = to_numpy(_proto(types_pb2.DT_FLOAT, [floats], float_val=sent), "x")
        assert filled.nbytes == MAX_BROADCAST_BYTES and filled[-1] == (sent or [0.0])[-1]
        with pytest.raises(ServingError) as info:
            to_numpy(_proto(types_pb2.DT_FLOAT, [floats + 1], float_val=sent), "x")
        assert str(MAX_BROADCAST_BYTES) in info.value.message
    huge = _proto(types_pb2.DT_FLOAT, [2**40])
    assert len(huge.SerializeToString()) == 13
    tracemalloc.start()
    try:
        with pytest.raises(ServingError) as info:
            to_numpy(huge, "x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "2147483647" in info.value.message and peak < 1 << 20, peak


def test_predict_fills_and_truncates_as_tensorflow(api_server) -> None:
    """A gRPC Predict with fewer, no, or more int_val values than its shape answers what the
    array TensorFlow parses from the same tensor answers."""
    batch = images(2, seed=9)
    for sent in (batch.ravel()[:5], [], np.concatenate([batch.ravel(), [1, 2, 3]])):
        request = predict_request("tiny", batch, content=False)
        tensor = request.inputs["images"]
        del tensor.int_val[:]
        tensor.int_val.extend(int(v) for v in sent)
        parsed = tf.io.parse_tensor(tensor.SerializeToString(), tf.uint8).numpy()
        reference = api_server.prediction().Predict(predict_request("tiny", parsed), timeout=30)
        answer = api_server.prediction().Predict(request, timeout=30)
        np.testing.assert_array_equal(scores_of(answer), scores_of(reference))
    request = predict_request("tiny", batch)
    request.inputs["images"].tensor_content += b"\0"  # one byte more than the shape's
    code, details = rpc_error(lambda: api_server.prediction().Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor parsing error: images" in details
