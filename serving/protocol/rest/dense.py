"""TF Serving's checks that a JSON value is a dense tensor (``json_tensor.cc``), without recursion.

A tensor's shape is read along the first element of each list (``GetDenseTensorShape``); every
list must then have the size of its level and every leaf must sit at the last level
(``FillTensorProto``). In the row format (``instances``) each instance is checked alone and must
have the size and shape of the first (``AddInstanceItem``). The error texts are TF Serving's,
after ``input 'NAME': `` (TF Serving does not name the input).
Nesting deeper than NumPy's dimension limit is refused before anything recurses.
"""

from __future__ import annotations

import json
from typing import Any

from serving.errors import invalid

MAX_DIMS = 64  # NumPy's NPY_MAXDIMS; TF's TensorShape would allow 254
_MAX_DEBUG_BYTES = 256  # json_tensor.cc's kMaxJsonDebugStringBytes


def debug_string(value: Any) -> str:
    """The JSON text of a value, cut at 256 bytes, as TF Serving's JsonValueToDebugString."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (RecursionError, TypeError, ValueError):
        text = f"<{type(value).__name__}>"
    return text.encode()[:_MAX_DEBUG_BYTES].decode(errors="ignore")


def _shape_string(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def dense_shape(value: Any, name: str) -> list[int]:
    """The shape read along first elements; INVALID_ARGUMENT beyond ``MAX_DIMS`` levels."""
    shape: list[int] = []
    level = value
    while isinstance(level, list):
        if len(shape) == MAX_DIMS:
            raise invalid(
                f"input '{name}': JSON lists nested more than {MAX_DIMS} deep (a tensor has at "
                f"most {MAX_DIMS} dimensions)"
            )
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    return shape


def checked_shape(value: Any, name: str) -> tuple[list[int], int]:
    """The shape and number of leaves of a dense JSON tensor; INVALID_ARGUMENT otherwise."""
    shape = dense_shape(value, name)
    rank, count = len(shape), 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, list):
            if level != rank:
                raise invalid(
                    f"input '{name}': JSON Value: {debug_string(item)} found at incorrect level: "
                    f"{level + 1} in the JSON DOM. Expected at level: {rank}"
                )
            count += 1
            continue
        if level >= rank:
            raise invalid(
                f"input '{name}': Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(item) != shape[level]:
            raise invalid(
                f"input '{name}': Encountered list at unexpected size: {len(item)} at level: "
                f"{level} expected size: {shape[level]}"
            )
        stack.extend((child, level + 1) for child in reversed(item))  # in document order
    return shape, count


def checked_rows(rows: list[Any], name: str) -> list[int]:
    """The shape of ``instances`` whose items are one input's values, checked as TF Serving does:
    each instance alone, then its size and shape against the first instance's."""
    first: tuple[list[int], int] | None = None
    for row in rows:
        shape, count = checked_shape(row, name)
        if first is None:
            first = shape, count
        elif count != first[1]:
            raise invalid(f"input '{name}': Expecting tensor size: {first[1]} but got: {count}")
        elif shape != first[0]:
            raise invalid(
                f"input '{name}': Expecting shape {_shape_string(first[0])} but got: "
                f"{_shape_string(shape)}"
            )
    return [len(rows), *(first[0] if first else [])]


def checked(value: Any, name: str, rows: bool) -> list[int]:
    """The shape of one input's JSON value (a list of instances when ``rows``)."""
    if rows and isinstance(value, list):
        return checked_rows(value, name)
    return checked_shape(value, name)[0]
