"""Fast conversion between ``TensorProto`` and numpy, for both wire forms TF Serving accepts.

Decoding accepts ``tensor_content`` and the typed repeated fields (a single typed value is
broadcast to the whole shape, as TensorFlow does). Encoding writes the typed repeated fields, as
TF Serving's ``Predict`` does by default, or ``tensor_content`` (its
``--enable_serialization_as_tensor_content``; strings always go in ``string_val``).
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import invalid

_DT_STRING, _DT_HALF = types_pb2.DT_STRING, types_pb2.DT_HALF  # read once: enum lookups are slow
# DataType enum -> (numpy dtype, typed field name, TensorFlow name)
_TYPES: dict[int, tuple[type | np.dtype, str, str]] = {
    types_pb2.DT_FLOAT: (np.float32, "float_val", "float"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val", "double"),
    types_pb2.DT_INT32: (np.int32, "int_val", "int32"),
    types_pb2.DT_UINT8: (np.uint8, "int_val", "uint8"),
    types_pb2.DT_INT16: (np.int16, "int_val", "int16"),
    types_pb2.DT_INT8: (np.int8, "int_val", "int8"),
    types_pb2.DT_UINT16: (np.uint16, "int_val", "uint16"),
    types_pb2.DT_INT64: (np.int64, "int64_val", "int64"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val", "bool"),
    _DT_HALF: (np.float16, "half_val", "half"),
    _DT_STRING: (object, "string_val", "string"),
}
_BY_NUMPY = {np.dtype(v[0]): k for k, v in _TYPES.items() if v[0] is not object}


def dtype_name(dtype: int) -> str:
    entry = _TYPES.get(dtype)
    return entry[2] if entry else types_pb2.DataType.Name(dtype)


def numpy_dtype(dtype: int) -> np.dtype:
    entry = _TYPES.get(dtype)
    if entry is None:
        raise invalid(f"unsupported tensor dtype {types_pb2.DataType.Name(dtype)}")
    return np.dtype(entry[0])


def to_numpy(proto: tensor_pb2.TensorProto, name: str) -> np.ndarray:
    """Decode a request tensor; ``name`` is used in error messages."""
    entry = _TYPES.get(proto.dtype)
    if entry is None:
        raise invalid(
            f"input tensor '{name}' has unsupported dtype {types_pb2.DataType.Name(proto.dtype)}"
        )
    np_type, field, _ = entry
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(s < 0 for s in shape):
        raise invalid(f"input tensor '{name}' has a negative dimension in {shape}")
    count = math.prod(shape)
    if proto.dtype == _DT_STRING:
        values = list(proto.string_val)
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif proto.tensor_content:
        array = np.frombuffer(proto.tensor_content, dtype=np_type)
    elif proto.dtype == _DT_HALF:
        array = np.array(proto.half_val, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(getattr(proto, field), dtype=np_type)
    if array.size == count:
        return array.reshape(shape)
    if (array.size == 1 and proto.dtype != _DT_STRING) or (array.size == 0 and count == 0):
        return np.full(shape, array[0] if array.size else 0, dtype=array.dtype)
    if array.size == 1:
        return np.full(shape, array[0], dtype=object)
    raise invalid(
        f"input tensor '{name}' has {array.size} values but its shape {shape} needs {count}"
    )


def from_numpy(
    array: np.ndarray, proto: tensor_pb2.TensorProto | None = None, content: bool = False
):
    """Encode an output array with typed repeated fields (TF Serving's default encoding), or
    with ``content`` as raw little-endian bytes in ``tensor_content``."""
    proto = proto if proto is not None else tensor_pb2.TensorProto()
    array = np.asarray(array)
    dims = proto.tensor_shape.dim
    del dims[:]
    for size in array.shape:
        dims.add(size=size)
    if array.dtype.kind in "OSU":
        proto.dtype = _DT_STRING
        proto.string_val.extend(
            v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()
        )
        return proto
    dtype = _BY_NUMPY.get(array.dtype)
    if dtype is None:
        raise invalid(f"cannot encode output of numpy dtype {array.dtype}")
    proto.dtype = dtype
    if content:
        proto.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return proto
    field = _TYPES[dtype][1]
    flat = array.ravel()
    if dtype == _DT_HALF:
        flat = flat.view(np.uint16)
    getattr(proto, field).extend(flat.tolist())
    return proto
