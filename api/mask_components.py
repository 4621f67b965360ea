"""Connected components of a boolean mask (8-connected), with numpy alone.

The mask is read as runs (row segments of set pixels); a run touches the runs of the row above
that overlap it or meet it diagonally, and runs are joined by union-find done a whole array at a
time (roots hooked to the smaller root, paths halved until they are flat). The cost grows with
the number of runs, not of pixels: a 256x256 mask of a digit has a few hundred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Components:
    """The components of a mask: ``sizes`` (pixels) and ``boxes`` (top, bottom, left, right;
    bottom and right exclusive) per component, and its runs, each with its component."""

    shape: tuple[int, int]
    sizes: np.ndarray
    boxes: np.ndarray
    run_starts: np.ndarray  # flat indices into the mask padded with one column on the right
    run_ends: np.ndarray  # exclusive
    run_labels: np.ndarray

    @property
    def count(self) -> int:
        return int(self.sizes.size)

    def touching(self, other: np.ndarray) -> np.ndarray:
        """Per component: whether any of its pixels is set in ``other`` (a mask of its shape)."""
        if self.count == 0:
            return np.zeros(0, bool)
        bounds = np.column_stack([self.run_starts, self.run_ends]).ravel()
        hits = np.logical_or.reduceat(_padded(other), bounds)[::2]
        return np.bincount(self.run_labels, weights=hits, minlength=self.count) > 0

    def mask(self, keep: np.ndarray) -> np.ndarray:
        """The pixels of the components ``keep`` (one bool per component) selects."""
        height, width = self.shape
        chosen = keep[self.run_labels]
        starts, ends = self.run_starts[chosen], self.run_ends[chosen]
        lengths = ends - starts
        flat = np.zeros(height * (width + 1), bool)
        flat[
            np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        ] = True
        return flat.reshape(height, width + 1)[:, :width]


def _padded(mask: np.ndarray) -> np.ndarray:
    """The mask with a clear column on the right, flat: no run crosses from one row to the next."""
    height, width = mask.shape
    padded = np.zeros((height, width + 1), bool)
    padded[:, :width] = mask
    return padded.ravel()


def components(mask: np.ndarray, max_runs: int | None = None) -> Components | None:
    """The 8-connected components of a 2-D boolean mask; None if it has more than ``max_runs``
    runs (noise, not shapes: callers bound their cost with it)."""
    height, width = mask.shape
    stride = width + 1
    steps = np.diff(_padded(mask).view(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(steps == 1)
    if max_runs is not None and starts.size > max_runs:
        return None
    ends = np.flatnonzero(steps == -1)
    rows = starts // stride
    # The runs of the row above that each run touches are consecutive: those ending at or after
    # its start (less one, diagonally) and starting at or before its end (plus one).
    above = (rows - 1) * stride
    first = np.searchsorted(ends, above + starts - rows * stride, side="left")
    last = np.searchsorted(starts, above + ends - rows * stride, side="right")
    counts = np.maximum(last - first, 0)
    lower = np.repeat(np.arange(starts.size), counts)
    offsets = np.arange(lower.size) - np.repeat(np.cumsum(counts) - counts, counts)
    upper = np.repeat(first, counts) + offsets
    roots = _union(starts.size, lower, upper)
    unique, labels = np.unique(roots, return_inverse=True)
    sizes = np.bincount(labels, weights=ends - starts, minlength=unique.size).astype(np.int64)
    boxes = np.empty((unique.size, 4), np.int64)
    columns = starts - rows * stride
    boxes[:, 0], boxes[:, 1] = height, 0
    boxes[:, 2], boxes[:, 3] = width, 0
    np.minimum.at(boxes[:, 0], labels, rows)
    np.maximum.at(boxes[:, 1], labels, rows + 1)
    np.minimum.at(boxes[:, 2], labels, columns)
    np.maximum.at(boxes[:, 3], labels, ends - rows * stride)
    return Components((height, width), sizes, boxes, starts, ends, labels)


def _union(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The root (smallest member) of each of ``count`` items joined by the pairs given."""
    parent = np.arange(count)
    while True:
        while True:  # flatten: every item points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        a, b = parent[left], parent[right]
        differ = a != b
        if not differ.any():
            return parent
        # Hook each root to the smallest root it is joined to (roots only: a, b are roots).
        np.minimum.at(parent, np.maximum(a[differ], b[differ]), np.minimum(a[differ], b[differ]))
