"""Decoding images to upright RGB or L, the one implementation the gateway serves with and
training's image-folder loader reads with: a JPEG's reduced-scale decoding (draft mode), EXIF
orientation, reduction to the work size in strips (no conversion ever copies the whole image),
any mode normalised (palettes, 16 and 32 bits, CMYK), alpha composited.

Nothing here checks limits or maps errors: the gateway's ``api/image_open.py`` and
``api/image_decode.py`` wrap it with both (untrusted input); training lets Pillow's errors name
the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin

# What Pillow raises for a file it cannot open or decode, besides DecompressionBombError (too
# many pixels) and MemoryError (sizes it cannot allocate): UnidentifiedImageError is an OSError,
# and broken headers raise the others (a TIFF whose strip offsets are typed as text: TypeError).
# The gateway answers them with 422 (``api/image_open.py``), training names the file.
DECODING_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError)
# What any reduced image may hold at most, whatever its aspect ratio.
WORK_MAX_PIXELS = 1 << 20
# Full-resolution images are reduced in horizontal strips of about this many pixels, so that no
# conversion (premultiplied alpha, palettes, 16 bits) ever copies the whole image.
_STRIP_PIXELS = 1 << 20
# The modes strips are converted to before Image.reduce (averaging needs premultiplied alpha,
# real colours instead of palette indices, and a mode reduce supports).
_REDUCE_MODE = {
    "RGBA": "RGBa",
    "LA": "La",
    "PA": "RGBa",
    "P": "RGBa",
    "1": "L",
    "I;16": "I",
    "I;16L": "I",
    "I;16B": "I",
    "I;16N": "I",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
    "RGBX": "RGB",
}
_UNPREMULTIPLY = {"RGBa": "RGBA", "La": "LA"}
# The attribute holding the region of an image that its source's pixels cover exactly (left, top,
# right, bottom, in its pixels; floats), where that is not the whole image: a JPEG decoded at a
# reduced scale, or an image reduced by a factor its size is no multiple of, has a last row and
# column that cover less of the source (Image.reduce and libjpeg round up). Pillow's own
# ``draft`` and ``resize(reducing_gap=...)`` carry that box on to the resize that follows; the
# photo profile does the same (:func:`source_box`). An attribute, not an Image.info entry: Pillow
# copies info into the images it derives, whose pixels differ, and a PNG's text chunks fill it.
_SOURCE_BOX = "_fdl_source_box"
Box = tuple[float, float, float, float]
# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class WorkSize:
    """How small a decoded image may become before preprocessing, without changing its result.

    ``cover``: the image will be resized to cover ``size`` (photo); else to fit inside it
    (digit). ``gap``: keep at least this factor above that size (Pillow's ``reducing_gap`` of the
    resize that follows), so the integer reduction here is the one that resize would have done.
    """

    size: tuple[int, int]
    cover: bool
    gap: float

    def factor(self, width: int, height: int) -> int:
        ratios = (width / self.size[0], height / self.size[1])
        factor = max(1, int((min(ratios) if self.cover else max(ratios)) / self.gap))
        # Image.reduce rounds up: a 1-pixel-wide strip stays 1 wide at any factor.
        while -(-width // factor) * -(-height // factor) > WORK_MAX_PIXELS:
            factor += 1
        return factor


def is_jpeg(image: Image.Image) -> bool:
    """A JPEG, or an MPO: a JPEG whose MPF segment lists more images (phone cameras' gain maps
    and dual images), which Pillow opens as a JpegImageFile subclass on its first image, the
    only one decoded (:func:`upright` never seeks past frame 0)."""
    return isinstance(image, JpegImagePlugin.JpegImageFile)


def draft(image: Image.Image, work: WorkSize) -> None:
    """Set an opened (not yet decoded) JPEG to decode at 1/2, 1/4 or 1/8 scale (Pillow's draft
    mode, done by libjpeg while decoding) as long as the result still covers the work size."""
    if is_jpeg(image):
        side = max(work.size)  # either orientation (EXIF may rotate it later)
        drafted = image.draft(image.mode if image.mode in ("L", "RGB") else None, (side, side))
        if drafted is not None:  # the source's extent at the scale chosen
            setattr(image, _SOURCE_BOX, tuple(float(v) for v in drafted[1]))


def source_box(image: Image.Image) -> Box:
    """The region of a decoded image (:func:`upright`'s) that its source's pixels cover exactly
    (left, top, right, bottom): the whole image unless a reduction rounded its size up."""
    box: Box | None = getattr(image, _SOURCE_BOX, None)
    return box if box is not None else (0.0, 0.0, float(image.width), float(image.height))


def upright(source: Image.Image, work: WorkSize | None = None) -> Image.Image:
    """Decode an opened image to an upright RGB or L image, reduced to ``work`` first (in 8 bits,
    in strips); the source's pixels are freed once a new image holds them."""
    source.seek(0)  # first frame of animations (and an MPO's primary image: a no-op at 0)
    source.load()
    box = source_box(source)
    orientation = _orientation(source)
    width, height = source.size
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    factor = work.factor(width, height) if work else 1
    image = _reduce(source, factor) if factor > 1 else source
    box = (box[0] / factor, box[1] / factor, box[2] / factor, box[3] / factor)
    if orientation in _ORIENT:
        box = _transposed(box, image.size, _ORIENT[orientation])
        image = image.transpose(_ORIENT[orientation])
    image = _normalize_mode(image)
    if image is not source:
        # Frees the full-size pixels now, though the caller may still hold the opened image.
        source.close()
    whole = (0.0, 0.0, float(image.width), float(image.height))
    setattr(image, _SOURCE_BOX, None if box == whole else box)
    return image


def _transposed(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """``box`` in an image of ``size`` as it lies once the image is transposed by ``method``."""
    width, height = size
    left, top, right, bottom = box
    flip_x = method in (
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_90,  # counter-clockwise: the right edge becomes the top
        Image.Transpose.TRANSVERSE,
    )
    flip_y = method in (
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,  # clockwise: the bottom edge becomes the left
        Image.Transpose.TRANSVERSE,
    )
    if flip_x:
        left, right = width - right, width - left
    if flip_y:
        top, bottom = height - bottom, height - top
    if method in (
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
    ):  # the axes swap
        return top, left, bottom, right
    return left, top, right, bottom


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of a loaded image (so that no decoding error is taken for an EXIF
    one); EXIF that cannot be read (a PNG's or WebP's eXIf chunk that is no TIFF structure, say)
    means none, as Pillow already reads a JPEG's."""
    try:
        orientation: int = image.getexif().get(ExifTags.Base.Orientation, 1)
    except MemoryError:
        raise
    except Exception:  # whatever the EXIF parser raises: the pixels are decoded and fine
        return 1
    return orientation


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Box-average by ``factor`` strip by strip: only a strip is ever converted at full size.

    Strips are a multiple of ``factor`` rows high, so the result is that of one Image.reduce.
    """
    width, height = image.size
    mode = _REDUCE_MODE.get(image.mode, image.mode)
    if image.mode in ("L", "RGB") and "transparency" in image.info:
        mode = "RGBa"
    rows = max(factor, _STRIP_PIXELS // width // factor * factor)
    reduced: Image.Image | None = None
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        if strip.mode != mode:
            # Premultiplied modes are reached through their straight-alpha form.
            straight = _UNPREMULTIPLY.get(mode)
            if straight and strip.mode != straight:
                strip = strip.convert(straight)
            strip = strip.convert(mode)
        small = strip.reduce(factor)
        if reduced is None:
            reduced = Image.new(mode, (-(-width // factor), -(-height // factor)))
        reduced.paste(small, (0, top // factor))
    assert reduced is not None
    return reduced.convert(_UNPREMULTIPLY[mode]) if mode in _UNPREMULTIPLY else reduced


def _normalize_mode(image: Image.Image) -> Image.Image:
    """Any mode to RGB or L: palettes expanded, 16-bit scaled, CMYK converted, alpha on white.

    Transparent pixels become white, unless what is opaque is itself light (white ink drawn on a
    transparent canvas): then black, so the drawing never vanishes into its background.
    """
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _eight_bits(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("RGB", "L") and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _background_for(rgba))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...
    return image


def _eight_bits(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float pixels to 8-bit L.

    A float image whose largest value is at most 1 holds 0-1 intensities (the usual float
    convention): scaled by 255 and rounded. Any other is read as 0-255 when its largest value
    is at most 255, else as 0-65535. Values outside the range clip; NaN reads as 0.
    """
    array = np.asarray(image, dtype=np.float64)
    top = float(array.max(initial=0, where=np.isfinite(array)))
    if image.mode == "F" and top <= 1.0:
        scaled = np.rint(array * 255.0)
    else:
        scaled = array / (65535.0 if top > 255 else 255.0) * 255.0
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255)
    return Image.fromarray(scaled.astype("uint8"), "L")


def _background_for(rgba: Image.Image) -> tuple[int, int, int, int]:
    array = np.asarray(rgba)
    alpha = array[..., 3].astype(np.float64) / 255.0
    weight = alpha.sum()
    if weight == 0 or alpha.min() > 0.5:
        return (255, 255, 255, 255)
    luminance = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    opaque_mean = float((luminance * alpha).sum() / weight)
    return (0, 0, 0, 255) if opaque_mean > 160 else (255, 255, 255, 255)
