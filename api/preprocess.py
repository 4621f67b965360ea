"""Turn decoded images into the tensor a model expects, from its input spec alone.

Two profiles, chosen by the model's channel count unless settings override it:
- ``digit`` (1 channel): normalize what people send (dark ink on light paper, photographed, off
  centre, any size) to what MNIST is: a white digit on black, cropped to the ink, fitted into
  20x20 keeping its aspect ratio and centred by centre of mass in 28x28.
- ``photo`` (3 channels): resize the shorter side with antialiasing, centre-crop to the input.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from api.image_open import WorkSize
from api.input_spec import InputSpec

PROFILES = ("digit", "photo")
# The digit profile works on images bounded to this size (detail enough for one digit).
DIGIT_WORK_SIZE = 256


def decode_size(profile: str, size: tuple[int, int]) -> WorkSize:
    """How far decoding may reduce an image for this profile (``size``: the model's W, H).

    The gaps are those of the resizes below (thumbnail's 2.0, the photo resize's 3.0), so the
    reduction done while decoding is the one they would have done.
    """
    if profile == "digit":
        return WorkSize((DIGIT_WORK_SIZE, DIGIT_WORK_SIZE), cover=False, gap=2.0)
    return WorkSize(size, cover=True, gap=3.0)


def choose_profile(spec: InputSpec, override: str | None = None) -> str:
    if override:
        return override
    return "digit" if spec.channels == 1 else "photo"


def preprocess(image: Image.Image, spec: InputSpec, profile: str) -> np.ndarray:
    height = spec.height if spec.height > 0 else 28
    width = spec.width if spec.width > 0 else 28
    channels = spec.channels if spec.channels > 0 else 1
    if profile == "digit":
        array = digit_to_mnist(image, (height, width))
    else:
        array = photo_to_array(image, (height, width))
    if channels == 1 and array.ndim == 3:
        array = np.asarray(Image.fromarray(array).convert("L"))
    if channels == 1:
        array = array[..., np.newaxis]
    elif channels == 3 and array.ndim == 2:
        array = np.repeat(array[..., np.newaxis], 3, axis=-1)
    return array.astype(np.uint8, copy=False)


def photo_to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    image = image.convert("RGB")
    # The centre region with the input's aspect ratio, resized to the input: the same as
    # resizing to cover and cropping, but never larger than the input, whatever the aspect ratio.
    scale = max(width / image.width, height / image.height)
    box_w, box_h = min(image.width, width / scale), min(image.height, height / scale)
    left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
    resized = image.resize(
        (width, height),
        Image.Resampling.LANCZOS,
        box=(left, top, left + box_w, top + box_h),
        reducing_gap=3.0,
    )
    return np.asarray(resized)


def digit_to_mnist(image: Image.Image, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    # Images already grey and small (the common case) skip a copy each; the result is the same.
    gray = image if image.mode == "L" else image.convert("L")
    if max(gray.size) > DIGIT_WORK_SIZE:
        # Work at a bounded size: enough detail for a digit, cheap for phone photos.
        gray = gray.copy() if gray is image else gray
        gray.thumbnail((DIGIT_WORK_SIZE, DIGIT_WORK_SIZE), Image.Resampling.BILINEAR)
    ink = _ink_map(gray)
    height, width = size
    box = _ink_box(ink)
    if box is None:
        return np.zeros((height, width), dtype=np.uint8)
    top, bottom, left, right = box
    crop = ink[top:bottom, left:right]
    # MNIST digits fill a 20x20 box inside the 28x28 frame.
    fit = round(min(height, width) * 20 / 28)
    scale = fit / max(crop.shape)
    new_h = max(1, round(crop.shape[0] * scale))
    new_w = max(1, round(crop.shape[1] * scale))
    fitted = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.LANCZOS))
    # Integer sums: exact, so the centre of mass does not depend on the order of summation.
    rows = fitted.sum(axis=1, dtype=np.int64)
    total = int(rows.sum())
    if total > 0:
        cols = fitted.sum(axis=0, dtype=np.int64)
        mass_y = int(rows @ np.arange(new_h)) / total
        mass_x = int(cols @ np.arange(new_w)) / total
    else:
        mass_y, mass_x = (new_h - 1) / 2, (new_w - 1) / 2
    # MNIST's centres of mass sit at (14.0, 14.0) in pixel-index coordinates of the 28x28 frame.
    top = round(height / 2 - mass_y)
    left = round(width / 2 - mass_x)
    top = min(max(top, 0), height - new_h)
    left = min(max(left, 0), width - new_w)
    canvas = np.zeros((height, width), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = fitted
    return canvas


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box of the ink, ignoring specks: found on a morphologically opened mask."""
    solid = ink > 64
    if min(ink.shape) > 64:  # specks of noise only matter in photos, which are larger
        solid = _open3(solid)
    if not solid.any():
        solid = ink > 0
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


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


def _background(gray: Image.Image, light: bool) -> np.ndarray:
    """The paper (or board) without the strokes: a rank filter at quarter scale, smoothed."""
    small = gray.resize((max(1, gray.width // 4), max(1, gray.height // 4)), Image.Resampling.BOX)
    rank = ImageFilter.MaxFilter(5) if light else ImageFilter.MinFilter(5)
    smooth = small.filter(rank).filter(ImageFilter.GaussianBlur(2))
    return np.asarray(smooth.resize(gray.size, Image.Resampling.BILINEAR), dtype=np.float64)


def _median(values: np.ndarray) -> float:
    """``np.median`` of a NaN-free array (the same value), without its generic overhead."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return float(np.partition(flat, half)[half])
    low, high = np.partition(flat, (half - 1, half))[half - 1 : half + 1]
    return (float(low) + float(high)) / 2  # as floats: uint8 sums would wrap


def _ink_map(gray: Image.Image) -> np.ndarray:
    """Ink as bright values on a zero background, whatever the polarity and lighting."""
    pixels = np.asarray(gray)  # uint8; medians of it are those of its float64 copy
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    light_paper = _median(border) > 127
    if light_paper and min(gray.size) >= 16:
        # Divide out uneven lighting: ink becomes its contrast against the local paper.
        background = _background(gray, light_paper)
        array = 255.0 - np.clip(pixels / np.maximum(background, 1.0) * 255.0, 0, 255)
        array -= _median(array)
    elif light_paper:
        array = 255.0 - pixels
        array -= _median(array)
    else:
        array = np.subtract(pixels, _median(pixels), dtype=np.float64)
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
