"""Which JSON values a dtype takes, as TF Serving's ``AddValueToTensor`` and
``JsonDecodeBase64Object`` take them (``json_tensor.cc``, tensorflow/serving @ 9d981c5c).

rapidjson tells integers from other numbers by how they are written: ``1`` is an integer,
``1.0`` and ``1e2`` are not, and ``true`` is not a number at all. So an integer input takes only
integers written as such, in the range of rapidjson's ``IsInt`` (int32, int16, int8, uint8),
``IsInt64``, ``IsUint`` (uint32) or ``IsUint64``; a floating-point input takes any number but not
a boolean; a boolean input only ``true`` and ``false``; a string input a string or
``{"b64": "…"}``. Anything else is ``JSON Value: V Type: T is not of expected type: D``.
Python's JSON parsers keep the same distinction (``int``, ``float``, ``bool``).
"""

from __future__ import annotations

import sys
from typing import Any

from fdl.b64 import b64_unescape
from fdl.tensors import dtype_name
from fdl.wire.tfs_pb2 import DataType
from serving.protocol.rest.dense import LeafCheck
from serving.protocol.rest.jsontext import debug_string, type_name

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
    # Not converted by TF Serving (UNIMPLEMENTED there); here, integers of the type's range.
    DataType.DT_UINT16: (0, 2**16 - 1),
}
_MAX_DOUBLE_INT = int(sys.float_info.max)  # beyond it no double: rapidjson would not parse it


def is_b64(value: Any) -> bool:
    """``IsValBase64Object``: an object with one key, ``b64``, holding a string."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def type_error(value: Any, dtype: int) -> str:
    return (
        f"JSON Value: {debug_string(value)} Type: {type_name(value)} is not of expected type: "
        f"{dtype_name(dtype)}"
    )


def string_element(value: Any) -> bytes | str:
    """A string input's element, or TF Serving's text (a ``str``) saying why it is none."""
    if type(value) is str:
        try:
            return value.encode()
        except UnicodeEncodeError:  # a lone "\ud800" escape, which Python's parser lets through
            return "JSON Parse error: The surrogate pair in string is invalid."
    if type(value) is dict:
        if not is_b64(value):
            return f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        decoded = b64_unescape(value["b64"])
        return "Unable to base64 decode" if decoded is None else decoded
    return type_error(value, DataType.DT_STRING)


def _string_leaf(value: Any) -> str | None:
    if type(value) is str or is_b64(value):
        return None  # decoded (or found undecodable) when the tensor is filled
    why = string_element(value)
    return why if isinstance(why, str) else None


def leaf_check(dtype: int) -> LeafCheck:
    """The check of one value for an input of ``dtype``: TF Serving's error text, or None."""
    if dtype == DataType.DT_STRING:
        return _string_leaf
    if dtype == DataType.DT_BOOL:
        return lambda value: None if type(value) is bool else type_error(value, dtype)
    limits = INTEGER_RANGES.get(dtype)  # type: ignore[call-overload]
    if limits is None:  # float, double (and half, which TF Serving does not convert)

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
