"""Connected components (8-connected) by runs and union-find, against a plain flood fill."""

from __future__ import annotations

from collections import deque

import numpy as np

from api.mask_components import components


def _flood_labels(mask: np.ndarray) -> np.ndarray:
    """-1 off the mask, else the component's number (a breadth-first flood fill)."""
    height, width = mask.shape
    labels = np.full(mask.shape, -1)
    count = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if labels[y, x] >= 0:
            continue
        labels[y, x] = count
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny in range(max(cy - 1, 0), min(cy + 2, height)):
                for nx in range(max(cx - 1, 0), min(cx + 2, width)):
                    if mask[ny, nx] and labels[ny, nx] < 0:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
        count += 1
    return labels


def test_components_are_the_flood_fills() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((height, width)) < rng.uniform(0.05, 0.7)
        labels = _flood_labels(mask)
        parts = components(mask)
        assert parts is not None and parts.count == labels.max() + 1
        other = rng.random(mask.shape) < 0.1
        touching = parts.touching(other)
        for index in range(parts.count):
            pixels = parts.mask(np.arange(parts.count) == index)
            (label,) = set(labels[pixels].tolist())
            assert np.array_equal(pixels, labels == label)
            assert parts.sizes[index] == pixels.sum()
            ys, xs = np.nonzero(pixels)
            assert tuple(parts.boxes[index]) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
            assert touching[index] == (pixels & other).any()


def test_shapes_that_join_late_and_the_run_bound() -> None:
    """A spiral and a comb (many runs joined only far away) are one component each; a mask with
    more runs than the bound is refused without labelling (hostile images cost no more)."""
    spiral = np.zeros((64, 64), bool)
    top, bottom, left, right = 0, 63, 0, 63
    while top + 2 <= bottom and left + 2 <= right:
        spiral[top, left : right + 1] = True
        spiral[top : bottom + 1, right] = True
        spiral[bottom, left : right + 1] = True
        spiral[top + 2 : bottom + 1, left] = True
        spiral[top + 2, left : left + 3] = True
        top, bottom, left, right = top + 2, bottom - 2, left + 2, right - 2
    comb = np.zeros((64, 64), bool)
    comb[:, ::2] = True
    comb[-1] = True
    for mask in (spiral, comb, np.ones((5, 7), bool)):
        parts = components(mask)
        assert parts is not None and parts.count == 1 and parts.sizes[0] == mask.sum()
    empty = components(np.zeros((4, 4), bool))
    assert empty is not None and empty.count == 0
    assert not empty.touching(np.ones((4, 4), bool)).any()
    checker = np.indices((256, 256)).sum(axis=0) % 2 == 0
    assert components(checker, max_runs=8 * 256) is None
