"""String tensors as NumPy object arrays, built a chunk at a time (for ``fdl.tensors``).

A decoded string element costs a slot of the object array (8 bytes) and a Python ``bytes``
object: 33 bytes of header and its bytes, rounded up to pymalloc's 16 (at most 48 bytes more than
its length; the empty and the one-byte strings are shared). ``STRING_ELEMENT_BYTES`` is that cost
per element, the width ``fdl.tensors``' decode bound counts for a string; the strings' own bytes
are copies of what the request holds. Nothing else grows with the element count: the object
array is filled ``_CHUNK`` strings at a time, and ``tensor_content``'s lengths are decoded a
chunk of bytes at a time (twice: once to check them, once to cut the strings), so the NumPy
temporaries, index lists and ``bytes`` lists stay the size of a chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise

import numpy as np

STRING_ELEMENT_BYTES = 8 + 48  # an array slot and a bytes object's header (see above)
_CHUNK = 1 << 14  # strings made at a time
_CHUNK_BYTES = 1 << 14  # bytes of an encoded list's lengths scanned at a time (as many varints)
_VARINT32_BYTES = 5  # a varint32 takes at most five bytes


def objects(values: Sequence[bytes], count: int) -> np.ndarray:
    """An object array of the first ``count`` of ``values`` (a protobuf repeated field, whose
    ``bytes`` are made a chunk at a time: no list of them all)."""
    array = np.empty(count, dtype=object)  # np.array would make fixed-width bytes
    for start in range(0, count, _CHUNK):
        array[start : start + _CHUNK] = values[start : min(count, start + _CHUNK)]
    return array


def decode_string_list(content: bytes, count: int) -> np.ndarray | None:
    """TensorFlow's ``DecodeStringList``: ``count`` lengths as varint32s, then exactly as many
    bytes as they add up to; the strings as an object array, or None where it fails. Parsed with
    NumPy, not a Python loop per length."""
    if count > len(content):  # every length takes at least one byte
        return None
    head = np.frombuffer(content, dtype=np.uint8, count=min(len(content), _VARINT32_BYTES * count))
    total = have = offset = 0
    for sizes, end in _lengths(head, count):
        if sizes is None:
            return None
        total += int(sizes.sum(dtype=np.uint64))  # < 2^48 a chunk
        have, offset = have + sizes.size, end
    if have < count or total != len(content) - offset:
        return None
    array = np.empty(count, dtype=object)
    at = 0
    for sizes, _end in _lengths(head, count):
        assert sizes is not None  # checked above
        bounds = (offset + np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))).tolist()
        array[at : at + sizes.size] = [content[a:b] for a, b in pairwise(bounds)]
        at, offset = at + sizes.size, bounds[-1]
    return array


def _lengths(head: np.ndarray, count: int) -> Iterator[tuple[np.ndarray | None, int]]:
    """The first ``count`` varint32s of ``head`` a chunk at a time: their values (None for a
    varint of more than five bytes) and the offset just past the chunk's last one. Stops early
    where ``head`` has fewer."""
    have = start = 0
    for at in range(0, head.size, _CHUNK_BYTES):
        ends = np.flatnonzero(head[at : at + _CHUNK_BYTES] < 0x80)[: count - have] + at
        if not ends.size:
            continue  # a varint running on past this chunk
        starts = np.concatenate(([start], ends[:-1] + 1))
        longest = int((ends - starts).max()) + 1
        if longest > _VARINT32_BYTES:
            yield None, 0
            return
        sizes = np.zeros(ends.size, dtype=np.uint64)
        for i in range(longest):  # the i-th byte of every varint that has one
            has = starts + i <= ends
            part = (head[starts[has] + i] & 0x7F).astype(np.uint64)
            sizes[has] |= part << np.uint64(7 * i)
        sizes &= np.uint64(0xFFFFFFFF)  # bits past 32 fall off, as in TensorFlow's GetVarint32
        have, start = have + ends.size, int(ends[-1]) + 1
        yield sizes, start
        if have == count:
            return
