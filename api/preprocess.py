"""Turn decoded images into the tensor a model expects, from its input spec alone.

Two profiles: the one ``FDL_PROFILES`` names for the model, else the one its served version was
trained for (``metadata.json``: recorded, or implied by its dataset), else by the model's channel
count (:func:`choose_profile`):
- ``digit``: normalize what people send (dark ink on light paper, photographed, off centre, any
  size) to what MNIST is: a white digit on black, cropped to the ink, fitted into 20x20 keeping
  its aspect ratio and centred by centre of mass in 28x28. An image already in that form passes
  through unchanged (:func:`mnist_form`).
- ``photo``: the centre region of the input's aspect ratio resized to it with Lanczos
  (:mod:`fdl.photo`, the code training's image-folder loader uses too).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from api.input_spec import InputSpec
from fdl import contract
from fdl.images import WorkSize
from fdl.photo import photo_to_array as photo_to_array
from fdl.photo import photo_work_size, to_channels

PROFILES = contract.PROFILES
# The digit profile works on images bounded to this size (detail enough for one digit).
DIGIT_WORK_SIZE = 256
# How far from the frame's centre an image's centre of mass may be to pass through the digit
# profile unchanged: of all its pixels (MNIST's: at most 0.52 pixel from (14.0, 14.0), train and
# test), and of the ink the normalization keeps (MNIST's: at most 0.75).
_MNIST_CENTRE_SLACK = 0.55
_INK_CENTRE_SLACK = 0.8
# The brightest pixel an image must have to pass through unchanged (MNIST's: 254 or 255).
_MNIST_PEAK = 250


def decode_size(profile: str, size: tuple[int, int]) -> WorkSize:
    """How far decoding may reduce an image for this profile (``size``: the model's W, H).

    The gaps are those of the resizes below (thumbnail's 2.0, the photo resize's 3.0), so the
    reduction done while decoding is the one they would have done.
    """
    if profile == contract.DIGIT_PROFILE:
        return WorkSize((DIGIT_WORK_SIZE, DIGIT_WORK_SIZE), cover=False, gap=2.0)
    return photo_work_size(size)


def choose_profile(spec: InputSpec, override: str | None = None) -> str:
    """``FDL_PROFILES``' profile for the model, else the one its served version records or its
    recorded dataset implies (:func:`api.repository.recorded_profile`), else ``digit`` for 1
    channel and ``photo`` for 3 (a version whose metadata records neither or cannot be read)."""
    if override:
        return override
    if spec.profile is not None and spec.profile in PROFILES:
        return spec.profile
    return contract.DIGIT_PROFILE if spec.channels == 1 else contract.PHOTO_PROFILE


def preprocess(image: Image.Image, spec: InputSpec, profile: str) -> np.ndarray:
    height = spec.height if spec.height > 0 else 28
    width = spec.width if spec.width > 0 else 28
    channels = spec.channels if spec.channels > 0 else 1
    if profile == contract.DIGIT_PROFILE:
        array = digit_to_mnist(image, (height, width))
    else:
        array = photo_to_array(image, (height, width))
    return to_channels(array, channels)


def mnist_form(image: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
    """The pixels of an image that is already what the digit profile makes, else None.

    The rule is strict, so that only images the normalization would leave (nearly) as they are
    skip it: exactly the input's size (``size``: H, W); grey (mode L, or RGB with three equal
    channels); a black background (the border's median is 0 and at least half of all pixels are
    exactly 0); full contrast (the brightest pixel at least 250); the ink's box as large as the
    profile makes it (its longer side 20/28 of the frame, or one pixel less), both of all pixels
    above 0 and of the ink the normalization measures (faint ink ignored: :func:`_ink_box`); and
    the centre of mass within 0.55 pixel of the frame's centre (within 0.8 for that ink alone).
    MNIST images, train and test, pass: 69,954 of 70,000 (the others have faint strokes the
    normalization drops, and it rescales what is left).
    """
    height, width = size
    if image.size != (width, height) or image.mode not in ("L", "RGB"):
        return None
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        if not ((pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])).all():
            return None
        pixels = pixels[..., 0]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if _median(border) != 0 or np.count_nonzero(pixels) * 2 > pixels.size:
        return None
    if int(pixels.max()) < _MNIST_PEAK:
        return None
    fit = round(min(height, width) * 20 / 28)
    # All ink, faint included, lies within the fitted box (nothing beyond it is dropped), and
    # the ink the normalization measures (faint ink ignored) is what it would fit into 20x20.
    side, offset = _extent(pixels)
    if side not in (fit - 1, fit) or offset > _MNIST_CENTRE_SLACK:
        return None
    ink = _dark_ink(pixels)  # _ink_map's, as the border is dark
    if _extent(ink > 64)[0] not in (fit - 1, fit) or _extent(ink)[1] > _INK_CENTRE_SLACK:
        return None
    return pixels


def _extent(values: np.ndarray) -> tuple[int, float]:
    """The longer side of the box of the values above 0 (none: 0), and how far (in the farther
    axis) their centre of mass is from the frame's centre (none: infinitely)."""
    rows = values.sum(axis=1, dtype=np.int64)
    cols = values.sum(axis=0, dtype=np.int64)
    total = int(rows.sum())
    if total == 0:
        return 0, float("inf")
    filled_rows, filled_cols = np.flatnonzero(rows), np.flatnonzero(cols)
    side = max(filled_rows[-1] - filled_rows[0], filled_cols[-1] - filled_cols[0]) + 1
    mass_y = int(rows @ np.arange(rows.size)) / total
    mass_x = int(cols @ np.arange(cols.size)) / total
    return int(side), max(abs(mass_y - rows.size / 2), abs(mass_x - cols.size / 2))


def digit_to_mnist(image: Image.Image, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """The digit profile: an image already in MNIST's form as it is, any other normalised."""
    already = mnist_form(image, size)
    return already if already is not None else normalize_digit(image, size)


def normalize_digit(image: Image.Image, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """The digit profile's normalization to MNIST's form (the module's docstring)."""
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
        return _dark_ink(pixels)
    return _scaled_ink(array)


def _dark_ink(pixels: np.ndarray) -> np.ndarray:
    """:func:`_ink_map` of grey pixels on a dark background (the border's median at most 127)."""
    return _scaled_ink(np.subtract(pixels, _median(pixels), dtype=np.float64))


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
