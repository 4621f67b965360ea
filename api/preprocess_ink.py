"""The digit profile's ink: what in a grey image is the digit, as bright values on zero, and the
box around it that the normalization crops (``api/preprocess.py``).

Polarity comes from the image's border and its tails: the ink is the tail of grey levels far
from the border's median (dark ink on paper, however dim; bright ink on a dark background or a
grey card), the median deciding only when neither tail is; on a dark background the ink is bright
unless a light sheet lies in the dark frame (:mod:`api.preprocess_sheet`):
then the ink is the dark ink on the sheet, and the desk around it is no ink. A light border that
is flat and much darker than the paper inside it (a screenshot's grey padding, a mount) is such a
desk too, if it holds no ink: its edge would otherwise read as ink, a frame around the digit.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from api.mask_components import components
from api.preprocess_sheet import desk_mask, margin_pieces

# Ink above this (of 255, the strongest) is what the box is measured on; fainter ink is cut.
_SOLID_INK = 64
# Ink at least half the strongest: a stroke's core, however thin the stroke.
_STRONG_INK = 128
# A stroke's piece apart from the digit (a pen line broken by the paper's grain or the photo's
# resolution) joins it when it is at least this share of the ink kept so far and lies within
# half the digit's size of it; specks are smaller, ruled lines and edges farther.
_PIECE_SHARE = 0.1
_PIECE_REACH = 0.5
# When the opening kept at least this share of the strong ink it touches, the strokes are thick:
# no piece apart from them joins.
_THICK_SHARE = 0.5
# A row (column) of strong ink across this share of the frame is a ruled line (a grid, a margin).
_LINE_COVER = 0.75
# Strong ink in more runs than this per row (this times the height, in all) is noise, not
# strokes: the opening alone decides.
_MAX_RUNS_PER_ROW = 8
# A light border is padding around a sheet (a screenshot's grey margin, a mount) when it is flat
# (its quartiles at most this many levels apart) and the image's light paper (its 90th
# percentile) is lighter than the border's median by at least _PADDING_CONTRAST.
_FLAT_BORDER = 12
_PADDING_CONTRAST = 48
# Padding is flat everywhere, not only along the border: a desk with more than this share of
# its pixels _PADDING_CONTRAST levels darker than the border's median holds ink (a digit on
# light grey paper beside a white label, which would pass for the sheet), and is no padding.
_PADDING_INK = 0.002
# The ink's tail (the 1st or 99th percentile's distance from the border's median) is the one
# this many times farther out than the other; else the border's brightness decides polarity.
_TAIL_RATIO = 2.0
# A bar across the frame this near its edge (of the frame's size) is no part of the digit when
# all ink lies either in the band from the edge to it or beyond it (see _edge_bars).
_BAR_MARGIN = 0.1
# The paper's closing (at quarter scale): its size, odd.
_CLOSING = 9


def median(values: np.ndarray) -> float:
    """``np.median`` of a NaN-free array (the same value), without its generic overhead."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, half)[half])
    low, high = np.partition(flat, (half - 1, half))[half - 1 : half + 1]
    return (float(low) + float(high)) / 2  # as floats: uint8 sums would wrap


def ink_map(gray: Image.Image) -> np.ndarray:
    """Ink as bright values on a zero background, whatever the polarity and lighting."""
    pixels = np.asarray(gray)  # uint8; medians of it are those of its float64 copy
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    level = median(border)
    if _light_paper(pixels, level):
        return _light_ink(gray, pixels, _padding(pixels, border, level))
    desk = desk_mask(pixels)
    if desk is not None:
        return _light_ink(gray, pixels, desk)
    return dark_ink(pixels)


def _light_paper(pixels: np.ndarray, level: float) -> bool:
    """Whether the background (the border's median ``level``) is paper under dark ink: the ink is
    the minority tail, the one of the image's 1st and 99th percentiles that lies farther from the
    background, by ``_TAIL_RATIO`` (dark ink on dim grey paper, white pen on a grey card); when
    neither does, the background's brightness decides (above 127: paper)."""
    sample = pixels[::2, ::2].ravel()  # a quarter of the pixels is enough for a percentile
    low_rank, high_rank = int(0.01 * (sample.size - 1)), int(0.99 * (sample.size - 1))
    low, high = np.partition(sample, (low_rank, high_rank))[[low_rank, high_rank]]
    dark, light = level - float(low), float(high) - level
    if dark > _TAIL_RATIO * light:
        return True
    if light > _TAIL_RATIO * dark:
        return False
    return level > 127


def _padding(pixels: np.ndarray, border: np.ndarray, level: float) -> np.ndarray | None:
    """Where a light sheet is not, when the light border around it is flat padding darker than
    the paper (grey 128 to about 207 around white: the rank filter's paper spilled over the
    padding's edge, which read as a frame of ink around the digit) and holds no ink, else None
    (the border is the paper)."""
    low, high = np.percentile(border, (25, 75))
    if high - low > _FLAT_BORDER:
        return None
    sample = pixels[::2, ::2].ravel()  # a quarter of the pixels is enough for a percentile
    rank = int(0.9 * (sample.size - 1))
    if float(np.partition(sample, rank)[rank]) < level + _PADDING_CONTRAST:
        return None
    desk = desk_mask(pixels)
    if desk is None:
        return None
    inked = np.count_nonzero(pixels[desk] < level - _PADDING_CONTRAST)
    return None if inked > _PADDING_INK * np.count_nonzero(desk) else desk


def _light_ink(gray: Image.Image, pixels: np.ndarray, desk: np.ndarray | None) -> np.ndarray:
    """Dark ink on light paper; ``desk``: where the paper is not (no ink there)."""
    if min(gray.size) >= 16:
        # Divide out uneven lighting: ink becomes its contrast against the local paper.
        background = _background(gray)
        array = 255.0 - np.clip(pixels / np.maximum(background, 1.0) * 255.0, 0, 255)
    else:
        array = 255.0 - pixels
    if desk is None:
        array -= median(array)
    else:
        array -= median(array[~desk])
        array[desk] = 0.0
    return _scaled_ink(array)


def dark_ink(pixels: np.ndarray) -> np.ndarray:
    """:func:`ink_map` of grey pixels on a dark background (the border's median at most 127)."""
    return _scaled_ink(np.subtract(pixels, median(pixels), dtype=np.float64))


def _background(gray: Image.Image) -> np.ndarray:
    """The paper without the strokes: a closing at quarter scale."""
    small = gray.resize((max(1, gray.width // 4), max(1, gray.height // 4)), Image.Resampling.BOX)
    # A closing: strokes (up to 8 small pixels wide) vanish, while a large dark area (a shadow)
    # keeps its edge in place (a blur after a max filter spread the paper into it: ink).
    closed = Image.fromarray(_closing(np.asarray(small), _CLOSING // 2))
    return np.asarray(closed.resize(gray.size, Image.Resampling.BILINEAR), dtype=np.float64)


def _closing(pixels: np.ndarray, radius: int) -> np.ndarray:
    """Grey closing with a square ``2 * radius + 1`` wide: its max filter, then its min filter,
    separable, on the pixels with their edges repeated outward (else light paper near the frame's
    edge, a white label, would stay spread along it)."""
    padded = np.pad(pixels, 2 * radius, mode="edge")
    for reduce in (np.maximum, np.minimum):
        for axis in (0, 1):
            size = padded.shape[axis] - 2 * radius
            shifted = [
                padded[(slice(None),) * axis + (slice(s, s + size),)] for s in range(2 * radius + 1)
            ]
            padded = reduce.reduce(shifted)
    return padded


def _scaled_ink(array: np.ndarray) -> np.ndarray:
    """Ink relative to its background (float, a copy the caller gives up) as uint8 ink."""
    peak = array.max()
    if peak <= 0:
        return np.zeros(array.shape, dtype=np.uint8)
    # The strongest ink becomes 255. Below a fifth of it is faint noise, set to 0 (negative
    # values included); above 255 there is only rounding (255 plus an ulp), which the cast to
    # uint8 truncates to 255, so no clipping is needed.
    array *= 255.0 / peak
    array[array < 0.2 * 255.0] = 0
    digit: np.ndarray = array.astype(np.uint8)
    return digit


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the ink (top, bottom, left, right; exclusive), ignoring specks."""
    solid = ink > _SOLID_INK
    if min(ink.shape) > 64:  # specks of noise only matter in photos, which are larger
        for strip in (_edge_bars, margin_pieces):  # a status bar first, then icons
            apart = strip(solid)
            if apart is not None:
                ink = np.where(apart, 0, ink)
                solid &= ~apart
        solid = _without_specks(ink, solid)
    if not solid.any():
        solid = ink > 0
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _edge_bars(solid: np.ndarray) -> np.ndarray | None:
    """The bands along the frame's edges that hold a bar of ink across ``_LINE_COVER`` of the
    frame within ``_BAR_MARGIN`` of the edge, and nothing else but what lies within the band, when
    a piece of ink of some size (the digit) lies beyond it: a screenshot's status bar, a desk's
    strip. None when there are none."""
    height, width = solid.shape
    if not (
        (np.count_nonzero(solid, axis=1) >= _LINE_COVER * width).any()
        or (np.count_nonzero(solid, axis=0) >= _LINE_COVER * height).any()
    ):
        return None  # the common case, decided cheaply
    pieces = components(solid, _MAX_RUNS_PER_ROW * height)
    if pieces is None or pieces.count < 2:
        return None
    bars = np.zeros_like(solid)
    top, bottom, left, right = pieces.boxes.T.astype(np.int64)
    for side, (near, far, start, end, size, across) in enumerate(
        (
            (top, bottom, left, right, height, width),
            (height - bottom, height - top, left, right, height, width),
            (left, right, top, bottom, width, height),
            (width - right, width - left, top, bottom, width, height),
        )
    ):
        bar = (end - start >= _LINE_COVER * across) & (near <= _BAR_MARGIN * size)
        for index in np.flatnonzero(bar):
            depth = far[index]
            beyond = near >= depth
            if (far <= depth).sum() + beyond.sum() < pieces.count:
                continue  # ink straddles the band: the bar is part of the digit
            if not beyond.any() or pieces.sizes[beyond].max() < _PIECE_SHARE * pieces.sizes.sum():
                continue
            band = (slice(0, depth), slice(size - depth, size))[side % 2]
            bars[(band, slice(None)) if side < 2 else (slice(None), band)] = True
    return bars if bars.any() else None


def _without_specks(ink: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """The ink that makes the digit: what a 3x3 opening keeps (strokes 3 pixels wide or more),
    and the strong ink's connected pieces that touch it, or the largest piece when it kept
    nothing (the strokes are thinner: a pen in a photo at 256 pixels), with the pieces of a
    comparable size near them. Ruled lines and faint marks are not strong ink; specks are small.
    """
    opened = _open3(solid)
    strong = ink >= _STRONG_INK
    rows, cols = np.flatnonzero(opened.any(axis=1)), np.flatnonzero(opened.any(axis=0))
    if rows.size:
        # Only the box matters: strong ink all within the opening's box adds nothing to it.
        outside = strong.copy()
        outside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = False
        if not outside.any():
            return opened
    pieces = components(_without_lines(strong), _MAX_RUNS_PER_ROW * ink.shape[0])
    if pieces is None or pieces.count == 0:
        return opened
    keep = pieces.touching(opened)
    if not keep.any():
        keep = np.arange(pieces.count) == int(np.argmax(pieces.sizes))
    elif np.count_nonzero(opened & strong) >= _THICK_SHARE * pieces.sizes[keep].sum():
        # Thick strokes, which the opening kept: a thin mark apart from them (an underline that
        # tells a 6 from a 9, a stray line) is no part of the digit, as before thin strokes were
        # kept at all.
        thick: np.ndarray = opened | pieces.mask(keep)
        return thick
    boxes = pieces.boxes
    while True:
        top, left = boxes[keep, 0].min(), boxes[keep, 2].min()
        bottom, right = boxes[keep, 1].max(), boxes[keep, 3].max()
        reach = _PIECE_REACH * max(bottom - top, right - left)
        near = (
            (boxes[:, 1] > top - reach)
            & (boxes[:, 0] < bottom + reach)
            & (boxes[:, 3] > left - reach)
            & (boxes[:, 2] < right + reach)
        )
        joined = keep | (near & (pieces.sizes >= _PIECE_SHARE * pieces.sizes[keep].sum()))
        if np.array_equal(joined, keep):
            kept: np.ndarray = opened | pieces.mask(keep)
            return kept
        keep = joined


def _without_lines(mask: np.ndarray) -> np.ndarray:
    """The mask less the rows and columns it covers for at least ``_LINE_COVER`` of the frame:
    ruled lines, a grid, a margin, whose pieces would otherwise join the digit they cross."""
    height, width = mask.shape
    lines = np.zeros_like(mask)
    lines[np.count_nonzero(mask, axis=1) >= _LINE_COVER * width] = True
    lines[:, np.count_nonzero(mask, axis=0) >= _LINE_COVER * height] = True
    kept: np.ndarray = mask & ~lines
    return kept


def _open3(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 square: removes specks smaller than 3x3."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    eroded = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            eroded &= padded[dy : dy + h, dx : dx + w]
    padded = np.pad(eroded, 1)
    opened = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            opened |= padded[dy : dy + h, dx : dx + w]
    return opened
