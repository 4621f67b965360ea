"""Wire conversions without a server: TensorProto <-> numpy, REST JSON, flags, batching config."""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.core.protobuf import meta_graph_pb2

from fdl.tensors import MAX_BROADCAST_BYTES
from serving.batching_config import BatchingConfig
from serving.config_files import read_batching_parameters
from serving.errors import ServingError
from serving.flags import FlagError, parse_flags
from serving.predict import from_numpy, to_numpy
from serving.protocol.rest.codec import format_outputs, nested_array, parse_predict_body, to_array


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        np.arange(6, dtype=np.int64).reshape(2, 3) - 3,
        np.arange(8, dtype=np.uint8).reshape(2, 2, 2),
        np.array([1.5, -2.25], dtype=np.float16),
        np.array([[1e300, -0.1]]),
        np.zeros((0, 3), dtype=np.float32),
        np.array([[b"a", b"bc"]], dtype=object),
        np.array([True, False]),
    ],
)
def test_tensor_round_trip_matches_tensorflow(array: np.ndarray) -> None:
    proto = from_numpy(array)
    assert not proto.tensor_content  # typed fields, as TF Serving answers
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)
    np.testing.assert_array_equal(to_numpy(tf.make_tensor_proto(array), "x"), array)
    np.testing.assert_array_equal(to_numpy(proto, "x"), array)


def test_typed_values_are_filled_and_bad_content_refused() -> None:
    """Typed values short of the shape's are filled with the last one (TensorFlow's rule; more
    in test_tensor_parsing.py); tensor_content of the wrong length is refused, naming the input."""
    proto = tf.make_tensor_proto(np.zeros((2, 3), np.float32))
    content = proto.tensor_content
    proto.ClearField("tensor_content")
    proto.float_val.append(2.5)
    np.testing.assert_array_equal(to_numpy(proto, "x"), np.full((2, 3), 2.5, np.float32))
    proto.float_val.append(1.0)
    np.testing.assert_array_equal(to_numpy(proto, "x").ravel(), [2.5, 1, 1, 1, 1, 1])
    proto.tensor_content = content[:-4]
    with pytest.raises(ServingError) as info:
        to_numpy(proto, "pixels")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: pixels" in info.value.message


def _broadcast(shape: list[int], dtype: int = 1):
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.append(1.0)
    return proto


def test_broadcast_refused_past_the_bound_before_allocating() -> None:
    """One value broadcast to a shape whose tensor would pass the gRPC message limit (2 GiB) is
    refused; a tensor sent whole in such a message always fits."""
    with pytest.raises(ServingError) as info:
        to_numpy(_broadcast([2**29 + 1]), "x")  # 4 bytes past 2 GiB of float32
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor 'x'" in info.value.message and "2147483647" in info.value.message
    assert to_numpy(_broadcast([2**10, 2**10]), "x").shape == (2**10, 2**10)


def test_one_value_fills_at_most_64_mib() -> None:
    """A 31-byte request must not make the server allocate gigabytes: one value may fill up to
    64 MiB (here 16 Mi float32 values); one more value's worth is refused."""
    assert to_numpy(_broadcast([2**24]), "x").nbytes == MAX_BROADCAST_BYTES
    with pytest.raises(ServingError) as info:
        to_numpy(_broadcast([2**24 + 1]), "x")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "broadcast" in info.value.message and str(MAX_BROADCAST_BYTES) in info.value.message


def test_from_numpy_keeps_about_one_copy() -> None:
    """Typed float outputs are written without a Python number per value (a list of them took
    8x the tensor, the 13x amplification of a 31-byte request)."""
    import tracemalloc

    array = np.arange(2**20, dtype=np.float32)
    tracemalloc.start()
    try:
        proto = from_numpy(array)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * array.nbytes, peak
    np.testing.assert_array_equal(tf.make_ndarray(proto), array)


def _signature(**inputs: int) -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    for name, dtype in inputs.items():
        signature.inputs[name].dtype = dtype
        signature.inputs[name].name = f"{name}:0"
    return signature


def test_rest_rows_columns_and_b64() -> None:
    signature = _signature(text=tf.string.as_datatype_enum, n=tf.uint8.as_datatype_enum)
    raw = b"\x00\xffbinary"
    body = {"instances": [{"text": {"b64": base64.b64encode(raw).decode()}, "n": 3}]}
    arrays, rows = parse_predict_body(body, signature)
    assert rows and arrays["text"].tolist() == [raw] and arrays["n"].dtype == np.uint8
    arrays, rows = parse_predict_body({"inputs": {"text": ["hi"], "n": [[1, 2]]}}, signature)
    assert not rows and arrays["text"].tolist() == [b"hi"] and arrays["n"].shape == (1, 2)


@pytest.mark.parametrize(
    ("value", "needle"),
    [([2**31], "not of expected type"), ([1.5], "not of expected type"), ([[1], [1, 2]], "images")],
)
def test_rest_values_checked_against_dtype(value: list, needle: str) -> None:
    info = meta_graph_pb2.TensorInfo(dtype=tf.uint8.as_datatype_enum)
    with pytest.raises(ServingError) as error:
        to_array(value, info, "images")
    assert error.value.http_status == 400 and needle in error.value.message
    # An int32 beyond uint8 wraps, as TF Serving's int_val does (it was a 400, "out of range").
    assert to_array([256, -1, 300], info, "images").tolist() == [0, 255, 44]


def _asarray_outcome(function, value) -> tuple:
    try:
        array = function(value)
    except Exception as error:
        return ("error", type(error))
    return ("array", array.dtype, array.shape, array.tolist() if array.dtype != object else None)


_LEAVES = st.one_of(
    st.integers(0, 255),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.just({"b64": "AA=="}),
)


@pytest.mark.parametrize(
    "value",
    [
        [[1, 2], [3, 4]],
        [[[1]], [[2]]],
        [1, 2.5],
        [True, 1],
        [[1, 2], [3]],  # ragged
        [[1, 2], []],
        [[1], [[2]]],  # leaves at two depths
        [[1, 2], "ab"],  # a string where a row should be
        [[1, 2], {"a": 1, "b": 2}],
        [[1, None]],
        [[10**30, 1]],
        [],
        [[]],
        7,
    ],
)
def test_nested_array_is_numpys_asarray(value) -> None:
    assert _asarray_outcome(nested_array, value) == _asarray_outcome(np.asarray, value)


@settings(max_examples=300, deadline=None)
@given(st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4), max_leaves=40))
def test_nested_array_matches_asarray_on_any_json(value) -> None:
    assert _asarray_outcome(nested_array, value) == _asarray_outcome(np.asarray, value)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(
        lambda shape: st.lists(
            st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.booleans(),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        ).map(lambda leaves: np.array(leaves, dtype=object).reshape(shape).tolist())
    )
)
def test_nested_array_matches_asarray_on_rectangular_numbers(value) -> None:
    assert _asarray_outcome(nested_array, value) == _asarray_outcome(np.asarray, value)


def test_rest_bad_b64_and_both_formats() -> None:
    signature = _signature(text=tf.string.as_datatype_enum)
    with pytest.raises(ServingError, match="base64"):
        parse_predict_body({"instances": [{"b64": "%%%"}]}, signature)
    with pytest.raises(ServingError, match="exactly one"):
        parse_predict_body({"instances": [], "inputs": []}, signature)
    with pytest.raises(ServingError, match="No values in 'instances' array"):
        parse_predict_body({"instances": []}, signature)


def test_rest_output_formats() -> None:
    outputs = {
        "scores": np.array([[0.1, 0.9]], np.float32),
        "img_bytes": np.array([b"\x01"], dtype=object),
    }
    rows = format_outputs(outputs, rows=True)
    assert rows == {"predictions": [{"scores": [0.1, 0.9], "img_bytes": {"b64": "AQ=="}}]}
    assert format_outputs({"scores": outputs["scores"]}, rows=False) == {"outputs": [[0.1, 0.9]]}


def test_flag_forms() -> None:
    args = parse_flags(["--model_base_path", "/m", "--enable_batching", "--port=9"])
    assert args.enable_batching is True and args.port == 9 and args.model_name == "default"
    off = parse_flags(["--model_base_path=/m", "--enable_model_warmup=false"])
    assert off.enable_model_warmup is False
    with pytest.raises(FlagError):
        parse_flags(["--model_base_path=/m", "--model_nam=x"])  # no abbreviations


def test_batching_parameters(tmp_path) -> None:
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ValueError, match="equal to max_batch_size"):
        BatchingConfig.from_proto(read_batching_parameters(path))
    path.write_text("max_batch_size { value: 16 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16")
    config = BatchingConfig.from_proto(read_batching_parameters(path))
    assert config.allowed_batch_sizes == (8, 16) and config.max_enqueued_batches == 10


def test_large_batch_splitting_parameters(tmp_path) -> None:
    path = tmp_path / "batching.config"
    path.write_text(
        "max_batch_size { value: 16 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 4 }\n"
    )
    config = BatchingConfig.from_proto(read_batching_parameters(path))
    assert config.enable_large_batch_splitting and config.batch_rows == 4
    path.write_text("max_batch_size { value: 16 }\nmax_execution_batch_size { value: 4 }\n")
    assert BatchingConfig.from_proto(read_batching_parameters(path)).batch_rows == 16
    path.write_text(
        "max_batch_size { value: 4 }\nenable_large_batch_splitting { value: true }\n"
        "max_execution_batch_size { value: 8 }\n"
    )
    with pytest.raises(ValueError, match="max_execution_batch_size must be between"):
        BatchingConfig.from_proto(read_batching_parameters(path))
