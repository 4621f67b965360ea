"""A light sheet in a darker frame: paper, a card or a sticky note photographed on a desk.

The digit profile reads the ink's polarity from the image's border. A photo of a sheet with a
darker desk around it has a dark border, yet its digit is dark ink on the light sheet: this finds
the sheet, so that the ink is read as on light paper, inside the sheet only.

A sheet is the largest light region after a global (Otsu) threshold where it is light paper (its
median above 127, or, dimly lit, 1.3 times the desk's median and 16 levels above it), at least 5%
of the frame, holding something darker (the ink: holes in it).
Those holes filled, it must be a quadrilateral seen at any angle and in perspective: filling at
least 75% of its best rotated rectangle, that rectangle's shorter side a quarter of the frame's
or more, with straight edges (of the outline's points, where the outline is sampled every 1/12 of
its length, at least 75% lie on a straight line with their neighbours). White strokes on black
(MNIST, canvas drawings, chalk on a blackboard) are no sheet: strokes without loops leave no
holes, and bold strokes with their loops filled have curved outlines (3,000 test digits drawn
bold at 256 pixels, strokes up to a third of the digit wide: at most 68% straight; sheets turned
up to 45 degrees or in perspective: at least 82%). A sheet is also mostly paper (60% of it, holes
filled, above the threshold), where the loop of a bold white 0 or 8, square ones too, is mostly
hole; and no image of 128 pixels or less is one (the ring of an upscaled MNIST 0 passed for
straight edges there). Around a drawing app's canvas, the ink near the frame's edge and well apart
from the digit (toolbar icons, palette swatches) is no part of it (:func:`margin_pieces`).
"""

from __future__ import annotations

import numpy as np

from api.mask_components import components

# An image this small or smaller (shorter side, pixels) is no photo of a sheet: photos are larger,
# and at this size the outline of a white "0" upscaled from MNIST passes for straight edges.
_MAX_SMALL_SIDE = 128
# Of the sheet (holes filled, edge left out), how much must be light paper: a sheet is mostly
# paper, the loop of a bold white "0" or "8" is mostly hole.
_MIN_PAPER = 0.6
# A dim sheet (its median at most 127) is paper when its median is at least this many times the
# rest of the frame's, and this many levels above it (the desk's grain and noise are less).
_DIM_RATIO = 1.3
_DIM_CONTRAST = 16
_MIN_AREA = 0.05  # of the frame
_MIN_EXTENT = 0.25  # the rotated rectangle's shorter side, of the frame's shorter side
_MIN_BOX_FILL = 0.35  # a quick test first: of its upright bounding box (a square turned 45
# degrees fills half of it)
_MIN_FILL = 0.75  # holes filled, of its best rotated rectangle
_MIN_STRAIGHT = 0.75
# The rectangles tried: every 3 degrees (a square's fill is above 0.95 within 1.5 degrees).
_ANGLES = np.deg2rad(np.arange(0.0, 90.0, 3.0))
# A sheet and its desk thresholded are a few runs per row (the sheet, the ink across it); more is
# texture or noise, and no sheet (this bounds the cost of hostile images).
_MAX_RUNS_PER_ROW = 8
# How far into the sheet its edge is left out (work pixels): the blur between desk and paper.
_EDGE = 2


def desk_mask(pixels: np.ndarray) -> np.ndarray | None:
    """Where a light sheet in ``pixels`` (grey, dark border) is not, else None (no sheet)."""
    height, width = pixels.shape
    if min(height, width) <= _MAX_SMALL_SIDE:
        return None
    light = pixels > _otsu(pixels)
    if np.count_nonzero(light) < _MIN_AREA * pixels.size:
        return None
    parts = components(light, _MAX_RUNS_PER_ROW * height)
    if parts is None:
        return None
    index = int(np.argmax(parts.sizes))
    size = int(parts.sizes[index])
    top, bottom, left, right = (int(v) for v in parts.boxes[index])
    if size < _MIN_AREA * pixels.size or size < _MIN_BOX_FILL * (bottom - top) * (right - left):
        return None
    sheet = parts.mask(np.arange(parts.count) == index)
    if not _paper(pixels, sheet):
        return None
    # The outline is the sheet's with its holes filled too (they lie inside it): shape first, as
    # the area inside the outline bounds the filled sheet's, then the holes.
    rows, columns = _outline(sheet), _outline(sheet.T)
    inside = int((rows[2] - rows[1]).sum()) + rows[0].size
    fill, extent = _rectangle_fill(inside, rows)
    if fill < _MIN_FILL or extent < _MIN_EXTENT * min(height, width):
        return None
    if _straightness(rows, columns) < _MIN_STRAIGHT:
        return None
    holes = _holes(~sheet, (top, bottom, left, right))
    if holes is None:
        return None
    filled = sheet | holes
    fill, _ = _rectangle_fill(int(np.count_nonzero(filled)), rows)
    if fill < _MIN_FILL:
        return None
    # The sheet's edge (JPEG's and the lens' blur between desk and paper) counts as desk.
    desk: np.ndarray = ~_eroded(filled, _EDGE)
    inner = ~desk
    if np.count_nonzero(light & inner) < _MIN_PAPER * np.count_nonzero(inner):
        return None
    return desk


def _paper(pixels: np.ndarray, sheet: np.ndarray) -> bool:
    """Whether the light region is paper: light (its median above 127), or lit dimly (a sheet on
    a dark desk in a dim room) and yet clearly lighter than the rest of the frame: its median at
    least ``_DIM_RATIO`` times the rest's and ``_DIM_CONTRAST`` levels above it."""
    level = _median(pixels[sheet])
    if level > 127:
        return True
    rest = _median(pixels[~sheet])
    return level >= _DIM_RATIO * rest and level >= rest + _DIM_CONTRAST


def _holes(other: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The regions apart from the sheet that lie inside its box, clear of the box's edges: the
    ink, what its loops enclose, whatever else lies on the sheet; None when there are none."""
    height, width = other.shape
    parts = components(other, _MAX_RUNS_PER_ROW * height)
    if parts is None:
        return None
    top, bottom, left, right = box
    boxes = parts.boxes
    inside = (
        (boxes[:, 0] > max(top, 0))
        & (boxes[:, 1] < min(bottom, height))
        & (boxes[:, 2] > max(left, 0))
        & (boxes[:, 3] < min(right, width))
    )
    if not inside.any():
        return None
    return parts.mask(inside)


def _outline(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows the mask has pixels in, and each one's first and last pixel's column."""
    rows = np.flatnonzero(mask.any(axis=1))
    firsts = np.argmax(mask[rows], axis=1)
    lasts = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    return rows, firsts, lasts


def _rectangle_fill(
    count: int, outline: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """The largest share of a rotated rectangle that ``count`` pixels with this row ``outline``
    fill (rectangles every 3 degrees), and that rectangle's shorter side."""
    rows, firsts, lasts = outline
    # Along any of these directions the extremes lie at a row's first or last pixel.
    ys = np.concatenate([rows, rows]).astype(np.float64)
    xs = np.concatenate([firsts, lasts]).astype(np.float64)
    cos, sin = np.cos(_ANGLES)[:, None], np.sin(_ANGLES)[:, None]
    along = xs * cos + ys * sin
    across = ys * cos - xs * sin
    lengths = along.max(axis=1) - along.min(axis=1) + 1
    widths = across.max(axis=1) - across.min(axis=1) + 1
    fills = count / (lengths * widths)
    best = int(np.argmax(fills))
    return float(fills[best]), float(min(lengths[best], widths[best]))


def _straightness(*outlines: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """The share of outline points (firsts and lasts of rows and of columns) on a straight line
    with the points 1/12 of the outline's length before and after them (within 2 pixels, or 1%
    of that length): 1 for a rectangle, about 0.8 turned 45 degrees, low for curves."""
    straight = total = 0
    for rows, firsts, lasts in outlines:
        length = rows.size
        step = max(2, length // 12)
        if length <= 2 * step:
            continue
        slack = max(2, length // 100)
        for edge in (firsts.astype(np.int64), lasts.astype(np.int64)):
            bend = edge[: -2 * step] - 2 * edge[step:-step] + edge[2 * step :]
            straight += int(np.count_nonzero(np.abs(bend) <= slack))
            total += bend.size
    return straight / total if total else 0.0


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask eroded by a square of side ``2 * radius + 1`` (outside the frame counts as set:
    a sheet cut by the frame keeps its edge there)."""
    height, width = mask.shape
    padded = np.pad(mask, radius, constant_values=True)
    rows = padded[:, radius : radius + width].copy()
    for shift in range(2 * radius + 1):
        rows &= padded[:, shift : shift + width]
    eroded = rows[radius : radius + height].copy()
    for shift in range(2 * radius + 1):
        eroded &= rows[shift : shift + height]
    return eroded


def _otsu(pixels: np.ndarray) -> int:
    """Otsu's threshold of uint8 pixels: the level that best splits them into two classes."""
    # Every other row and column: the same split, at a quarter of the cost.
    hist = np.bincount(pixels[::2, ::2].ravel(), minlength=256).astype(np.float64)
    below = np.cumsum(hist)
    mass = np.cumsum(hist * np.arange(256))
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below - mass * below[-1]) ** 2 / (below * above)
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between))


def _median(values: np.ndarray) -> float:
    half = values.size // 2
    return float(np.partition(values, half)[half]) if values.size else 0.0


# Ink pieces wholly within this share of the frame from an edge, apart from the digit's main piece
# (the largest, wholly beyond that band) by at least _MARGIN_GAP of its size, are no part of the
# digit: a drawing app's toolbar icons and palette swatches around its canvas.
_MARGIN_BAND = 1 / 6
_MARGIN_GAP = 0.3


def margin_pieces(solid: np.ndarray) -> np.ndarray | None:
    """The pieces of ``solid`` ink (a mask, with no bar across the frame) lying wholly within
    ``_MARGIN_BAND`` of an edge while the largest piece lies wholly beyond it, at least
    ``_MARGIN_GAP`` of its size away: a screenshot's icons and swatches. None when there are none.
    A digit touching the frame, or whose detached stroke (a 5's bar) lies near it, keeps it all."""
    height, width = solid.shape
    band_y, band_x = int(height * _MARGIN_BAND), int(width * _MARGIN_BAND)
    if not (
        solid[:band_y].any()
        or solid[height - band_y :].any()
        or solid[:, :band_x].any()
        or solid[:, width - band_x :].any()
    ):
        return None  # the common case, decided cheaply
    pieces = components(solid, _MAX_RUNS_PER_ROW * height)
    if pieces is None or pieces.count < 2:
        return None
    top, bottom, left, right = pieces.boxes.T
    main = int(np.argmax(pieces.sizes))
    gap = _MARGIN_GAP * max(bottom[main] - top[main], right[main] - left[main])
    drop = np.zeros(pieces.count, bool)
    for near, far, size in (
        (top, bottom, height),
        (height - bottom, height - top, height),
        (left, right, width),
        (width - right, width - left, width),
    ):
        band = size * _MARGIN_BAND
        if near[main] >= band:
            drop |= (far <= band) & (near[main] - far >= gap)
    return pieces.mask(drop) if drop.any() else None
