"""numpy arrays <-> ``TensorProto``, for the gateway and the model server alike.

The functions read and write fields by name, so they work on any ``TensorProto`` class with
TensorFlow's field names: the vendored ``fdl.wire.tfs_pb2`` messages the gateway speaks (no
TensorFlow import) and the official ``tensorflow.core`` messages the model server speaks; the
``DataType`` numbers are the same in both.

Decoding reads ``tensor_content`` or the typed repeated fields by TensorFlow's rule (fewer typed
values than the shape's are filled with the last one, more are ignored). Encoding writes the typed
repeated fields, as TF Serving's ``Predict`` does by default, or with ``content`` raw
little-endian bytes in ``tensor_content`` (one copy, the fastest form to parse; strings always go
in ``string_val``).

Malformed tensors raise what ``error`` makes of a message: :class:`TensorError` by default, the
model server's INVALID_ARGUMENT error there. Decoding is bounded: a tensor that would take more
than 2 GiB (the gRPC message limit) once decoded, a string counting ``STRING_ELEMENT_BYTES``, is
refused unallocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from fdl.grpc_tuning import MAX_MESSAGE_BYTES
from fdl.tensor_strings import STRING_ELEMENT_BYTES, decode_string_list, objects
from fdl.wire.tfs_pb2 import DataType, TensorProto


class TensorError(ValueError):
    """A tensor this codec cannot decode or encode."""


ErrorFactory = Callable[[str], Exception]
Message = TypeVar("Message")

# Read once: looking an enum value up on the wrapper is a Python call each time, and a response
# decodes several tensors.
_DT_STRING, _DT_HALF = int(DataType.DT_STRING), int(DataType.DT_HALF)
# DataType number -> (numpy dtype, typed field name, TensorFlow name)
_TYPES: dict[int, tuple[np.dtype[Any], str, str]] = {
    DataType.DT_FLOAT: (np.dtype(np.float32), "float_val", "float"),
    DataType.DT_DOUBLE: (np.dtype(np.float64), "double_val", "double"),
    DataType.DT_INT32: (np.dtype(np.int32), "int_val", "int32"),
    DataType.DT_UINT8: (np.dtype(np.uint8), "int_val", "uint8"),
    DataType.DT_INT16: (np.dtype(np.int16), "int_val", "int16"),
    DataType.DT_INT8: (np.dtype(np.int8), "int_val", "int8"),
    DataType.DT_UINT16: (np.dtype(np.uint16), "int_val", "uint16"),
    DataType.DT_INT64: (np.dtype(np.int64), "int64_val", "int64"),
    DataType.DT_UINT32: (np.dtype(np.uint32), "uint32_val", "uint32"),
    DataType.DT_UINT64: (np.dtype(np.uint64), "uint64_val", "uint64"),
    DataType.DT_BOOL: (np.dtype(np.bool_), "bool_val", "bool"),
    DataType.DT_HALF: (np.dtype(np.float16), "half_val", "half"),
    DataType.DT_STRING: (np.dtype(object), "string_val", "string"),
}
_BY_NUMPY = {v[0]: k for k, v in _TYPES.items() if k != _DT_STRING}
# tensor_content is little-endian whatever the host's byte order.
_LITTLE_ENDIAN = {k: v[0].newbyteorder("<") for k, v in _TYPES.items() if k != _DT_STRING}
# Typed fields of fixed width: DataType -> (wire tag of the packed field, little-endian dtype).
# float_val is field 5, double_val field 6 of tensor.proto; wire type 2 (length-delimited).
_PACKED_FIXED: dict[int, tuple[bytes, np.dtype[Any]]] = {
    int(DataType.DT_FLOAT): (bytes([5 << 3 | 2]), np.dtype("<f4")),
    int(DataType.DT_DOUBLE): (bytes([6 << 3 | 2]), np.dtype("<f8")),
}
_CHUNK = 1 << 16  # typed values converted to or from Python numbers at a time
_MAX_DIMS = 64  # NumPy's limit (TensorFlow's is 254)
_MAX_ELEMENTS = 2**63 - 1  # TensorShape's limit on the number of elements


def enum_name(dtype: int) -> str:
    """``DT_FLOAT`` for 1; the number itself for a type the vendored enum does not list."""
    try:
        return DataType.Name(dtype)
    except ValueError:
        return f"DataType {dtype}"


def dtype_name(dtype: int) -> str:
    """TensorFlow's name of a ``DataType`` (``float``, ``uint8``, ``string``)."""
    entry = _TYPES.get(dtype)
    return entry[2] if entry else enum_name(dtype)


def numpy_dtype(dtype: int, error: ErrorFactory = TensorError) -> np.dtype[Any]:
    """The numpy dtype of a ``DataType`` (``object`` for strings)."""
    entry = _TYPES.get(dtype)
    if entry is None:
        raise error(f"unsupported tensor dtype {enum_name(dtype)}")
    return entry[0]


# The most bytes a tensor filled from fewer typed values than its shape's may take.
MAX_BROADCAST_BYTES = 64 * 1024 * 1024


def to_numpy(
    proto: Any,
    name: str = "tensor",
    error: ErrorFactory = TensorError,
) -> np.ndarray:
    """Decode a tensor as TensorFlow's ``Tensor::FromProto`` does; ``name`` is used in errors.

    An empty shape reads no values. Otherwise ``tensor_content``, when set, wins and must hold
    exactly the shape's values (for strings, TensorFlow's encoded list: the lengths as varints,
    then the bytes); else the typed field is read: extra values are ignored, missing ones repeat
    the last value sent, and none at all gives zeros (empty strings, ``False``). A tensor
    TensorFlow would not parse (a negative dimension, more elements than an int64 counts,
    ``tensor_content`` of the wrong length) is ``tensor parsing error: NAME``, as TF Serving words
    it, with the reason after it; so is a shape NumPy cannot hold (65 or more dimensions). A
    tensor that would take more than the gRPC message limit once decoded is refused before
    anything is allocated (a numeric tensor sent whole in a message always fits; a string counts
    ``STRING_ELEMENT_BYTES``, what decoding it costs), and so is one of more
    than ``MAX_BROADCAST_BYTES`` whose typed values are not all sent.
    """
    kind = proto.dtype
    entry = _TYPES.get(kind)
    if entry is None:
        raise error(f"input tensor '{name}' has unsupported dtype {enum_name(kind)}")
    np_type, field, _ = entry
    shape = [d.size for d in proto.tensor_shape.dim]
    count = _checked_count(shape, np_type.itemsize, name, error)
    # What decoding costs: a string's array slot and bytes object (tensor_strings.py).
    nbytes = count * (STRING_ELEMENT_BYTES if kind == _DT_STRING else np_type.itemsize)
    if nbytes > MAX_MESSAGE_BYTES:
        raise error(
            f"input tensor '{name}' of shape {shape} would take {nbytes} bytes decoded, more "
            f"than the {MAX_MESSAGE_BYTES} bytes a request tensor may take"
        )
    if count == 0:  # TensorFlow reads neither tensor_content nor the typed values
        return np.empty(shape, dtype=np_type)
    if proto.tensor_content:
        return _from_content(proto.tensor_content, kind, count, name, error).reshape(shape)
    values = getattr(proto, field)
    sent = len(values)
    if sent < count and nbytes > MAX_BROADCAST_BYTES:
        # A few bytes on the wire must not become gigabytes here (a Predict holds about five
        # times its input): values beyond this are sent, not filled.
        raise error(
            f"input tensor '{name}': {sent} typed values broadcast to shape {shape} would take "
            f"{nbytes} bytes; at most {MAX_BROADCAST_BYTES} bytes may be filled from fewer values "
            "than the shape has (send them all)"
        )
    array = _typed(values, kind, count)
    if sent >= count:
        return array.reshape(shape)
    # Fill without a copy of the value per element (strings share one bytes object).
    zero = b"" if kind == _DT_STRING else np_type.type(0)
    filled = np.full(count, array[-1] if sent else zero, dtype=np_type)
    filled[:sent] = array
    return filled.reshape(shape)


def _typed(values: Any, kind: int, count: int) -> np.ndarray:
    """The first ``count`` typed values (all, when fewer are sent) as an array of the tensor's
    dtype. Past ``count``, a chunk at a time: a slice of a repeated field is a list of Python
    objects, 5 to 10 times the values' size."""
    if kind == _DT_STRING:
        return objects(values, min(len(values), count))
    if len(values) <= count:
        return _converted(values, kind)
    array = np.empty(count, dtype=_TYPES[kind][0])
    for start in range(0, count, _CHUNK):
        array[start : start + _CHUNK] = _converted(values[start : min(count, start + _CHUNK)], kind)
    return array


def _converted(values: Any, kind: int) -> np.ndarray:
    """``int_val`` and ``half_val`` hold int32 numbers that TensorFlow casts, wrapping, to the
    narrower type, as NumPy's cast does."""
    np_type, field, _ = _TYPES[kind]
    if field in ("int_val", "half_val"):
        array = np.array(values, dtype=np.int32).astype(np_type if kind != _DT_HALF else np.uint16)
        return array.view(np.float16) if kind == _DT_HALF else array
    return np.array(values, dtype=np_type)


def _from_content(
    content: bytes, kind: int, count: int, name: str, error: ErrorFactory
) -> np.ndarray:
    """``count`` values from ``tensor_content``, which must hold exactly that many."""
    if kind == _DT_STRING:
        strings = decode_string_list(content, count)
        if strings is None:
            raise error(
                f"tensor parsing error: {name} (tensor_content of {len(content)} bytes is not "
                f"an encoded list of {count} strings)"
            )
        return strings
    width = _LITTLE_ENDIAN[kind].itemsize
    if len(content) != count * width:
        raise error(
            f"tensor parsing error: {name} (tensor_content has {len(content)} bytes; its shape "
            f"needs {count} {_TYPES[kind][2]} values, {count * width} bytes)"
        )
    return np.frombuffer(content, dtype=_LITTLE_ENDIAN[kind])


def _checked_count(shape: list[int], width: int, name: str, error: ErrorFactory) -> int:
    """The number of elements of a valid shape; ``tensor parsing error`` for an invalid one.
    TensorFlow's ``TensorShape::IsValid``: no negative size, and no running product of the
    sizes past 2^63-1 (so a zero after an overflow does not save the shape)."""
    if len(shape) > _MAX_DIMS:
        raise error(f"tensor parsing error: {name} ({len(shape)} dimensions; at most {_MAX_DIMS})")
    if any(s < 0 for s in shape):
        raise error(f"tensor parsing error: {name} (a negative dimension in {shape})")
    count = 1
    for size in shape:
        count *= size
        if count > _MAX_ELEMENTS:
            raise error(
                f"tensor parsing error: {name} (shape {shape} has more than 2^63-1 elements)"
            )
    if count == 0 and math.prod(s for s in shape if s) * width > _MAX_ELEMENTS:
        # NumPy refuses an empty array whose other sizes multiply past its index range.
        raise error(f"tensor parsing error: {name} (shape {shape} is too large for NumPy)")
    return count


def from_numpy(
    array: np.ndarray,
    proto: Message,
    content: bool = False,
    error: ErrorFactory = TensorError,
) -> Message:
    """Encode ``array`` into ``proto`` (an empty ``TensorProto`` of either class, or a map entry
    such as ``response.outputs[key]``) and return it."""
    message: Any = proto
    array = np.asarray(array)
    dims = message.tensor_shape.dim
    del dims[:]
    for size in array.shape:
        dims.add(size=size)
    if array.dtype.kind in "OSU":
        message.dtype = _DT_STRING
        message.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()
        )
        return proto
    dtype = _BY_NUMPY.get(array.dtype)
    if dtype is None:
        raise error(f"cannot encode output of numpy dtype {array.dtype}")
    message.dtype = dtype
    if content:
        message.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    flat = array.ravel()
    packed = _PACKED_FIXED.get(dtype)
    if packed is not None and flat.size:
        # The packed field's wire form is the values' little-endian bytes: one parse in C, no
        # Python float per value (a list of them took 8x the tensor's memory and 70x the time).
        values = flat.astype(packed[1], copy=False).data.cast("B")
        wire = bytearray(packed[0] + _varint(values.nbytes))
        wire += values  # the one copy: header and values in one buffer, parsed in place
        message.MergeFromString(wire)
        return proto
    if dtype == _DT_HALF:
        flat = flat.view(np.uint16)
    values = getattr(message, _TYPES[dtype][1])
    for start in range(0, flat.size, _CHUNK):  # Python ints a chunk at a time, not the whole
        values.extend(flat[start : start + _CHUNK].tolist())
    return proto


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def to_tensor_proto(array: np.ndarray) -> TensorProto:
    """What the gateway sends: a vendored ``TensorProto`` with the values in ``tensor_content``."""
    return from_numpy(array, TensorProto(), content=True)
