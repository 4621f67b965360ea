"""numpy arrays <-> TensorProto, reading both ``tensor_content`` and the typed repeated fields."""

from __future__ import annotations

import math

import numpy as np

from fdl.wire.tfs_pb2 import DataType, TensorProto, TensorShapeProto

_NUMPY_BY_DTYPE: dict[DataType, np.dtype] = {
    DataType.DT_FLOAT: np.dtype(np.float32),
    DataType.DT_DOUBLE: np.dtype(np.float64),
    DataType.DT_INT32: np.dtype(np.int32),
    DataType.DT_UINT8: np.dtype(np.uint8),
    DataType.DT_INT16: np.dtype(np.int16),
    DataType.DT_INT8: np.dtype(np.int8),
    DataType.DT_INT64: np.dtype(np.int64),
    DataType.DT_BOOL: np.dtype(np.bool_),
    DataType.DT_UINT16: np.dtype(np.uint16),
    DataType.DT_HALF: np.dtype(np.float16),
    DataType.DT_UINT32: np.dtype(np.uint32),
    DataType.DT_UINT64: np.dtype(np.uint64),
}
_DTYPE_BY_NUMPY = {v: k for k, v in _NUMPY_BY_DTYPE.items()}
# Read once: looking an enum value up on the wrapper is a Python call each time, and a response
# decodes several tensors; the little-endian dtypes, likewise built once.
_DT_STRING, _DT_HALF = DataType.DT_STRING, DataType.DT_HALF
_LITTLE_ENDIAN = {k: v.newbyteorder("<") for k, v in _NUMPY_BY_DTYPE.items()}

# The typed field that carries each dtype when tensor_content is empty.
_TYPED_FIELD = {
    DataType.DT_FLOAT: "float_val",
    DataType.DT_DOUBLE: "double_val",
    DataType.DT_INT32: "int_val",
    DataType.DT_UINT8: "int_val",
    DataType.DT_INT16: "int_val",
    DataType.DT_INT8: "int_val",
    DataType.DT_UINT16: "int_val",
    DataType.DT_INT64: "int64_val",
    DataType.DT_BOOL: "bool_val",
    DataType.DT_HALF: "half_val",
    DataType.DT_UINT32: "uint32_val",
    DataType.DT_UINT64: "uint64_val",
}


def dtype_name(dtype: int) -> str:
    return DataType.Name(dtype)


def to_tensor_proto(array: np.ndarray) -> TensorProto:
    """Numeric arrays go into ``tensor_content`` (one copy, fastest to parse on the server)."""
    shape = TensorShapeProto(dim=[TensorShapeProto.Dim(size=int(d)) for d in array.shape])
    if array.dtype.kind in ("U", "S", "O"):
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)]
        return TensorProto(dtype=_DT_STRING, tensor_shape=shape, string_val=values)
    dtype = _DTYPE_BY_NUMPY.get(array.dtype)
    if dtype is None:
        raise ValueError(f"unsupported dtype {array.dtype}")
    content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return TensorProto(dtype=dtype, tensor_shape=shape, tensor_content=content)


def from_tensor_proto(proto: TensorProto) -> np.ndarray:
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    kind = proto.dtype
    if kind == _DT_STRING:
        values = np.array(list(proto.string_val), dtype=object)
        return values.reshape(shape) if values.size else np.empty(shape, dtype=object)
    dtype = _NUMPY_BY_DTYPE.get(kind)
    if dtype is None:
        raise ValueError(f"unsupported dtype {dtype_name(kind)}")
    content = proto.tensor_content
    if content:
        return np.frombuffer(content, dtype=_LITTLE_ENDIAN[kind]).reshape(shape)
    values = getattr(proto, _TYPED_FIELD[kind])
    if kind == _DT_HALF:
        array = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(values, dtype=dtype)
    size = math.prod(shape)
    if array.size == 1 and size > 1:
        # TF Serving may send one value for a tensor whose elements are all equal.
        array = np.full(size, array[0], dtype=dtype)
    return array.reshape(shape)
