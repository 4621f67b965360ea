"""TF Serving's checks that a JSON value is a dense tensor (``json_tensor.cc``), without recursion.

A tensor's shape is read along the first element of each list (``GetDenseTensorShape``); every
list must then have the size of its level and every leaf must sit at the last level
(``FillTensorProto``). In the row format (``instances``) each instance is checked alone and must
have the size and shape of the first (``AddInstanceItem``). The error texts are TF Serving's,
after ``input 'NAME': `` (TF Serving does not name the input).
Nesting deeper than NumPy's dimension limit is refused before anything recurses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving.errors import ServingError, invalid
from serving.protocol.rest.jsontext import debug_string

MAX_DIMS = 64  # NumPy's NPY_MAXDIMS; TF's TensorShape would allow 254
# Why a leaf value cannot be an element of the tensor, or None when it can: TF Serving's text
# (INVALID_ARGUMENT), or an error with another code (UNIMPLEMENTED for a dtype it cannot fill).
LeafCheck = Callable[[Any], str | ServingError | None]


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


def _leaf_error(name: str, why: str | ServingError, in_row: bool) -> ServingError:
    if isinstance(why, str):
        return invalid(f"input '{name}': {why}")
    if in_row:  # FillTensorMapFromInstancesList: INVALID_ARGUMENT, the item's status in the text
        return invalid(f"input '{name}': {why.code.name}: {why.message}")
    return ServingError(why.code, f"input '{name}': {why.message}")


def checked_shape(
    value: Any, name: str, leaf: LeafCheck | None = None, in_row: bool = False
) -> tuple[list[int], int]:
    """The shape and number of leaves of a dense JSON tensor; INVALID_ARGUMENT otherwise.
    ``leaf`` checks each value where it sits, so the first error in document order is the one
    reported, as ``FillTensorProto`` reports it; ``in_row``: the value is one instance."""
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
            if leaf is not None and (why := leaf(item)) is not None:
                raise _leaf_error(name, why, in_row)
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


def checked_rows(rows: list[Any], name: str, leaf: LeafCheck | None = None) -> list[int]:
    """The shape of ``instances`` whose items are one input's values, checked as TF Serving does:
    each instance alone, then its size and shape against the first instance's."""
    first: tuple[list[int], int] | None = None
    for row in rows:
        shape, count = checked_shape(row, name, leaf, in_row=True)
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


def checked(value: Any, name: str, rows: bool, leaf: LeafCheck | None = None) -> list[int]:
    """The shape of one input's JSON value (a list of instances when ``rows``), each value
    checked by ``leaf`` where it sits."""
    if rows and isinstance(value, list):
        return checked_rows(value, name, leaf)
    return checked_shape(value, name, leaf)[0]
