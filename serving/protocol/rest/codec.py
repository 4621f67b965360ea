"""TF Serving's REST JSON formats: row (``instances``) and columnar (``inputs``), ``{"b64": …}``."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from fdl.tensors import numpy_dtype
from serving.errors import invalid
from serving.protocol.rest.dense import checked
from serving.protocol.rest.jsontext import debug_string
from serving.protocol.rest.values import CONVERTED, is_b64, leaf_check, string_element


def _leaves(value: Any, shape: list[int]) -> list[Any]:
    """The values of a JSON value already checked dense with ``shape``, in document order."""
    leaves: list[Any] = value if shape else [value]
    for _ in shape[1:]:
        leaves = list(chain.from_iterable(leaves))
    return leaves


def _string_array(value: Any, shape: list[int], name: str) -> np.ndarray:
    """A string tensor of a JSON value already checked dense with ``shape``."""
    elements = list(map(string_element, _leaves(value, shape)))
    for element in elements:
        if isinstance(element, str):  # "Unable to base64 decode"
            raise invalid(f"input '{name}': {element}")
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array.reshape(shape)


_MAX_FAST_DIMS = 32  # deeper lists are NumPy's to refuse (at most 64 dimensions)


def nested_array(value: Any) -> np.ndarray:
    """``np.asarray(value)``, a quarter faster for rectangular nested lists of numbers (a 28x28x1
    image: 112 against 150 us; docs/serving.md).

    NumPy discovers the shape of nested lists element by element; here each level is checked
    for equal lengths and flattened in C (``map(len)``, ``chain``), and only the flat list of
    leaves goes to NumPy. Whatever this path does not handle (ragged or empty lists, strings,
    objects, leaves of mixed depth) is left to ``np.asarray``, so results and errors are the same.
    """
    if type(value) is not list:
        return np.asarray(value)
    shape = []
    level: Any = value
    while type(level) is list:
        if not level or len(shape) > _MAX_FAST_DIMS:
            return np.asarray(value)
        shape.append(len(level))
        level = level[0]
    items: list[Any] = value
    try:
        for size in shape[1:]:
            if set(map(len, items)) != {size}:
                return np.asarray(value)
            items = list(chain.from_iterable(items))
        flat = np.array(items)
    except (TypeError, ValueError):
        return np.asarray(value)
    if flat.ndim != 1 or flat.dtype.kind not in "biuf" or flat.size != math.prod(shape):
        return np.asarray(value)
    return flat.reshape(shape)


def _plain(array: np.ndarray, target: np.dtype[Any], bools: bool) -> bool:
    """Whether NumPy's array of the values is what TF Serving takes for the ``target`` dtype, in
    the range we take, so no value needs a look of its own. NumPy turns ``[true, 2]`` into
    integers: with ``bools`` (the body has a literal ``true`` or ``false``) numbers always take
    the exact path."""
    have, kind = array.dtype.kind, target.kind
    if not array.size or kind == "b":
        return have == kind or not array.size
    if bools or have not in ("iu" if kind in "iu" else "iuf"):
        return False
    if kind == "f":
        return True
    limits = np.iinfo(target)  # within the types' ranges TF Serving takes (values.py)
    return bool(limits.min <= array.min() and array.max() <= limits.max)


def to_array(
    value: Any,
    info: meta_graph_pb2.TensorInfo,
    name: str,
    rows: bool = False,
    bools: bool = True,
) -> np.ndarray:
    """Convert a JSON value to the signature's dtype, or an error naming the input (400; 501 at
    the first value of a dtype TF Serving does not fill from JSON, such as ``half``).

    ``rows``: the value is the list of one input's values in the ``instances`` format, each
    instance checked on its own as TF Serving does. A value that is not a dense tensor, or holds
    a value the dtype does not take (``values.py``: ``1.0`` or ``true`` for an integer input),
    gets TF Serving's error at the first such value. Numbers that NumPy reads into an array of
    the right kind and range take a fast path with no look at each value; ``bools``: whether the
    body may hold ``true`` or ``false`` (which NumPy would read as numbers).
    """
    check = leaf_check(info.dtype)
    if info.dtype not in CONVERTED:  # TF Serving cannot fill it: an error at the first value
        shape = checked(value, name, rows, check)
        return np.empty(shape, numpy_dtype(info.dtype, invalid))  # no values: an empty tensor
    target = numpy_dtype(info.dtype, invalid)
    if target == np.dtype(object):
        return _string_array(value, checked(value, name, rows, check), name)
    try:
        array: np.ndarray | None = nested_array(value)
    except ValueError:
        array = None
    if array is not None and _plain(array, target, bools):
        return array.astype(target)
    shape = checked(value, name, rows, check)  # TF Serving's error at the first bad value
    wide: Any = np.float64 if target.kind == "f" else target
    if target.kind in "iu":
        wide = np.uint64 if target == np.uint64 else np.int64
    array = np.array(_leaves(value, shape), dtype=wide).reshape(shape)
    # An int32 beyond a narrower type wraps (300 is 44 in uint8), as TF Serving's int_val does
    # when TensorFlow reads the tensor.
    return array.astype(target)


def _row_columns(rows: list[Any], names: list[str]) -> dict[str, list[Any]]:
    """``instances`` as one list of values per input, split and checked as TF Serving's
    ``FillTensorMapFromInstancesList`` does: plain values for a one-input signature, else
    objects with exactly the signature's keys; a key it does not have is an error."""
    if type(rows[0]) is not dict and len(names) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if not _named(rows[0]):
        for i, row in enumerate(rows):
            if _named(row):
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
        return {names[0]: rows}
    wanted = set(names)
    for i, row in enumerate(rows):
        if not _named(row):
            raise invalid(f"Expecting object but got list at item {i} of input list")
        for key in row:
            if key not in wanted:
                raise invalid(
                    f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        if len(row) != len(wanted):
            raise invalid(
                f"Failed to process element: {i} of 'instances' list. JSON object: "
                f"{debug_string(row)} keys must be equal to: {','.join(names)}"
            )
    return {key: [row[key] for row in rows] for key in names}


def _named(value: Any) -> bool:
    return type(value) is dict and not is_b64(value)


def parse_predict_body(
    body: Any, signature: meta_graph_pb2.SignatureDef, bools: bool = True
) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs by alias, and whether the row format was used; ``bools``: see :func:`to_array`.

    In the ``inputs`` format, keys the signature does not have are ignored, as TF Serving's
    ``FillTensorMapFromInputsMap`` reads only the signature's inputs.
    """
    if not isinstance(body, dict):
        raise invalid("JSON request body must be an object")
    has_rows, has_columns = "instances" in body, "inputs" in body
    if not has_rows and not has_columns:
        raise invalid("Missing 'inputs' or 'instances' key")
    if has_rows and has_columns:
        raise invalid("JSON request must contain exactly one of 'instances' or 'inputs'")
    names = sorted(signature.inputs)
    if not names:  # TF Serving would read past the end of its (empty) map here
        raise invalid("the signature has no inputs to fill from this request")
    if has_rows:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise invalid("'instances' must be a list")
        if not rows:  # json_tensor.cc, FillPredictRequestFromJson
            raise invalid("No values in 'instances' array")
        columns = _row_columns(rows, names)
    else:
        value = body["inputs"]
        if _named(value):
            for key in names:
                if key not in value:
                    raise invalid(f"Missing named input: {key} in 'inputs' object.")
            columns = {key: value[key] for key in names}
        elif len(names) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        else:
            columns = {names[0]: value}
    return {
        key: to_array(value, signature.inputs[key], key, has_rows, bools)
        for key, value in columns.items()
    }, has_rows


def _jsonable(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        binary = name.endswith("_bytes")

        def one(value: Any) -> Any:
            raw = value if isinstance(value, bytes) else str(value).encode()
            if not binary:
                try:
                    return raw.decode()
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(raw).decode()}

        return np.vectorize(one, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype in (np.float32, np.float16) and array.size:
        # Shortest round-trip text of each float32 value ("0.1", not 0.10000000149011612).
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def format_outputs(outputs: Mapping[str, np.ndarray], rows: bool) -> dict[str, Any]:
    if not rows:
        if len(outputs) == 1:
            ((key, array),) = outputs.items()
            return {"outputs": _jsonable(array, key)}
        return {"outputs": {k: _jsonable(a, k) for k, a in outputs.items()}}
    sizes = {a.shape[0] if a.ndim else None for a in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid(
            "row format ('instances') needs every output to have the same 0th dimension; "
            "use the columnar format ('inputs')"
        )
    if len(outputs) == 1:
        ((key, array),) = outputs.items()
        return {"predictions": _jsonable(array, key)}
    columns = {k: _jsonable(a, k) for k, a in outputs.items()}
    count = sizes.pop()
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(count)]}
