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
from PIL import Image

from api.input_spec import InputSpec
from api.preprocess_ink import dark_ink as _dark_ink
from api.preprocess_ink import ink_box as _ink_box
from api.preprocess_ink import ink_map as _ink_map
from api.preprocess_ink import median as _median
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
# A digit whose box at the work size is smaller than the fitted size (20 of 28) is read again
# at the decoded image's scale, when that is _ZOOM_MIN_SCALE times finer or more, in a region
# _ZOOM_REGION times its box's size (at least _ZOOM_MIN_SIDE decoded pixels).
_ZOOM_MIN_SCALE = 1.5
_ZOOM_REGION = 3
_ZOOM_MIN_SIDE = 96


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


def _zoomed(
    gray: Image.Image,
    work: tuple[int, int],
    ink: np.ndarray,
    box: tuple[int, int, int, int],
    fit: int,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The ink and its box read again at the decoded image's finer scale around a digit smaller
    at the work size than the ``fit`` it is scaled to (a 150-pixel digit in a 4000x3000 photo: 7
    work pixels, 19 decoded), in a region 3 times the box's size, when its box there lies where
    the first one did; else ``ink`` and ``box`` as they are."""
    top, bottom, left, right = box
    scale = gray.width / work[0]
    side = max(bottom - top, right - left)
    if side >= fit or scale < _ZOOM_MIN_SCALE:
        return ink, box
    centre_y, centre_x = (top + bottom) / 2 * scale, (left + right) / 2 * scale
    half = max(side * scale * _ZOOM_REGION / 2, _ZOOM_MIN_SIDE / 2)
    region = (
        max(0, int(centre_x - half)),
        max(0, int(centre_y - half)),
        min(gray.width, int(np.ceil(centre_x + half))),
        min(gray.height, int(np.ceil(centre_y + half))),
    )
    crop = gray.crop(region)
    if max(crop.size) > DIGIT_WORK_SIZE:
        return ink, box
    fine_ink = _ink_map(crop)
    fine = _ink_box(fine_ink)
    if fine is None:
        return ink, box
    # The digit found again: its box's centre within the first box (at the decoded scale, a work
    # pixel of slack), its size within a factor of 2 of the first box's.
    fine_side = max(fine[1] - fine[0], fine[3] - fine[2])
    fine_y = region[1] + (fine[0] + fine[1]) / 2
    fine_x = region[0] + (fine[2] + fine[3]) / 2
    if not (
        (top - 1) * scale <= fine_y <= (bottom + 1) * scale
        and (left - 1) * scale <= fine_x <= (right + 1) * scale
        and side * scale / 2 <= fine_side <= side * scale * 2
    ):
        return ink, box
    return fine_ink, fine


def normalize_digit(image: Image.Image, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """The digit profile's normalization to MNIST's form (the module's docstring)."""
    # Images already grey and small (the common case) skip a copy each; the result is the same.
    gray = image if image.mode == "L" else image.convert("L")
    work = gray
    if max(gray.size) > DIGIT_WORK_SIZE:
        # Work at a bounded size: enough detail for a digit, cheap for phone photos.
        work = gray.copy()
        work.thumbnail((DIGIT_WORK_SIZE, DIGIT_WORK_SIZE), Image.Resampling.BILINEAR)
    ink = _ink_map(work)
    height, width = size
    box = _ink_box(ink)
    if box is not None and work is not gray:
        ink, box = _zoomed(gray, work.size, ink, box, round(min(height, width) * 20 / 28))
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
