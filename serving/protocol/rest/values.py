"""Which JSON values a dtype takes, as TF Serving's ``AddValueToTensor`` and
``JsonDecodeBase64Object`` take them (``json_tensor.cc``, tensorflow/serving @ 9d981c5c).

rapidjson tells integers from other numbers by how they are written: ``1`` is an integer,
``1.0`` and ``1e2`` are not, and ``true`` is not a number at all. So an integer input takes only
integers written as such, in the range of rapidjson's ``IsInt`` (int32, int16, int8, uint8),
``IsInt64``, ``IsUint`` (uint32) or ``IsUint64``; a floating-point input takes any number but not
a boolean; a boolean input only ``true`` and ``false``; a string input a string or
``{"b64": "…"}``. Anything else is ``JSON Value: V Type: T is not of expected type: D``.
Python's JSON parsers keep the same distinction (``int``, ``float``, ``bool``). An integer of the
predicate's range that the dtype cannot hold (``300`` for ``uint8``) goes into ``int_val`` and
wraps when TensorFlow reads the tensor, as there. Other dtypes (``half``, ``uint16``,
``bfloat16``, ...) have no case in ``AddValueToTensor``: their first value is UNIMPLEMENTED
(``Conversion of JSON Value: V to type: half``, HTTP 501), an object still the type error.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc

from fdl.b64 import b64_unescape
from fdl.tensors import dtype_name, enum_name
from fdl.wire.tfs_pb2 import DataType
from serving.errors import ServingError
from serving.protocol.rest.dense import LeafCheck
from serving.protocol.rest.jsontext import debug_string, type_name
from serving.protocol.rest.rawtext import RawString, utf8

_INT32 = (-(2**31), 2**31 - 1)
# The integers each integer dtype takes (the rapidjson predicate json_tensor.cc applies).
INTEGER_RANGES = {
    DataType.DT_INT32: _INT32,
    DataType.DT_INT16: _INT32,
    DataType.DT_INT8: _INT32,
    DataType.DT_UINT8: _INT32,
    DataType.DT_INT64: (-(2**63), 2**63 - 1),
    DataType.DT_UINT32: (0, 2**32 - 1),
    DataType.DT_UINT64: (0, 2**64 - 1),
}
# The dtypes AddValueToTensor converts; any other is UNIMPLEMENTED at its first value.
CONVERTED = frozenset(
    {*INTEGER_RANGES, DataType.DT_FLOAT, DataType.DT_DOUBLE, DataType.DT_STRING, DataType.DT_BOOL}
)
_STRINGS = (str, RawString)
_MAX_DOUBLE_INT = int(sys.float_info.max)  # beyond it no double: rapidjson would not parse it


def is_b64(value: Any) -> bool:
    """``IsValBase64Object``: an object with one key, ``b64``, holding a string."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) in _STRINGS


def type_error(value: Any, dtype: int) -> str:
    return (
        f"JSON Value: {debug_string(value)} Type: {type_name(value)} is not of expected type: "
        f"{_tf_name(dtype)}"
    )


def string_element(value: Any) -> bytes | str:
    """A string input's element, or TF Serving's text (a ``str``) saying why it is none."""
    if type(value) is str:
        element = utf8(value)
    elif type(value) is RawString:  # from a body that is not UTF-8: its bytes, as rapidjson
        element = value.raw
    elif type(value) is dict:
        if not is_b64(value):
            return f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        decoded = b64_unescape(value["b64"])
        return "Unable to base64 decode" if decoded is None else decoded
    else:
        return type_error(value, DataType.DT_STRING)
    if element is None:  # a lone "\ud800" escape, which Python's parser lets through
        return "JSON Parse error: The surrogate pair in string is invalid."
    return element


def _string_leaf(value: Any) -> str | None:
    if type(value) in _STRINGS or is_b64(value):
        return None  # decoded (or found undecodable) when the tensor is filled
    why = string_element(value)
    return why if isinstance(why, str) else None


def _tf_name(dtype: int) -> str:
    """TensorFlow's ``DataTypeString``: the codec's names (``float``, ``half``, ``uint16``), else
    TensorFlow's Python name, the same for the types the codec lacks (``bfloat16``, ``qint8``)."""
    name = dtype_name(dtype)
    if name != enum_name(dtype):
        return name
    import tensorflow as tf  # loaded already: the server runs TensorFlow

    try:
        return str(tf.dtypes.as_dtype(dtype).name)
    except TypeError:  # not a type TensorFlow knows either
        return name


def unconvertible(dtype: int) -> LeafCheck:
    """The check of a dtype AddValueToTensor has no case for: any value fails (json_tensor.cc,
    FillTensorProto then AddValueToTensor's default)."""

    def check(value: Any) -> str | ServingError:
        if type(value) is dict:
            return type_error(value, dtype)
        return ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {debug_string(value)} to type: {_tf_name(dtype)}",
        )

    return check


def leaf_check(dtype: int) -> LeafCheck:
    """The check of one value for an input of ``dtype``: TF Serving's error text, or None."""
    if dtype not in CONVERTED:
        return unconvertible(dtype)
    if dtype == DataType.DT_STRING:
        return _string_leaf
    if dtype == DataType.DT_BOOL:
        return lambda value: None if type(value) is bool else type_error(value, dtype)
    limits = INTEGER_RANGES.get(dtype)  # type: ignore[call-overload]
    if limits is None:  # float and double

        def number(value: Any) -> str | None:
            if type(value) is float or (type(value) is int and abs(value) <= _MAX_DOUBLE_INT):
                return None
            return type_error(value, dtype)

        return number
    low, high = limits

    def integer(value: Any) -> str | None:
        if type(value) is int and low <= value <= high:
            return None
        return type_error(value, dtype)

    return integer
