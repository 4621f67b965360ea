"""Decoding user images safely with Pillow: any common format, EXIF orientation, alpha on white."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from api.errors import ApiError

DEFAULT_MAX_PIXELS = 16_000_000
SUPPORTED = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# The most scans a JPEG may have: progressive encoders write about 10 (mozjpeg's up to ~20).
MAX_JPEG_SCANS = 100
# open_image checks the pixel count itself (before any pixel is decoded, after a JPEG's draft
# scale is chosen), so Pillow's own warning is redundant; its error stays armed far above.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# Full-resolution images are reduced in horizontal strips of about this many pixels, so that no
# conversion (premultiplied alpha, palettes, 16 bits) ever copies the whole image.
_STRIP_PIXELS = 1 << 20
# What any reduced image may hold at most, whatever its aspect ratio.
_WORK_MAX_PIXELS = 1 << 20
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
# Decompressed PNG metadata (text, ICC profiles) read per image; past it, such chunks are skipped.
MAX_PNG_METADATA_BYTES = 1 << 20
# Where open_image notes the pixel count of the canvas before any draft scale (image.info).
_CANVAS = "fdl_canvas_pixels"
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


class _BoundedPngStream(PngImagePlugin.PngStream):
    """Pillow's PNG chunk reader, inflating at most MAX_PNG_METADATA_BYTES of metadata per image.

    Each zTXt, iTXt or iCCP chunk inflates to up to 1 MiB (Pillow's MAX_TEXT_CHUNK); Pillow
    bounds text at 64 MiB per image and ICC profiles not at all, so a 9.5 MB PNG of 9,000 small
    iCCP chunks of zeros took 43 s to open (then on the event loop), and 64 PNGs
    of 64 zTXt chunks (4 MB) took 4 GB. A compressed chunk is charged the most it may inflate,
    whatever Pillow keeps (a bad zlib checksum is found after the whole inflate). Past the bound
    chunks are read and CRC-checked, not inflated: the gateway uses no text; the first (the ICC
    profile) stays."""

    def _spent(self) -> bool:
        return self.text_memory >= MAX_PNG_METADATA_BYTES

    def _skip(self, length: int) -> bytes:
        assert self.fp is not None
        return ImageFile._safe_read(self.fp, length)

    def _inflating(self, read: Callable[[int, int], bytes], pos: int, length: int) -> bytes:
        if self._spent():
            return self._skip(length)
        try:
            return read(pos, length)
        finally:
            self.text_memory += PngImagePlugin.MAX_TEXT_CHUNK

    def chunk_iCCP(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_iCCP, pos, length)

    def chunk_tEXt(self, pos: int, length: int) -> bytes:
        return self._skip(length) if self._spent() else super().chunk_tEXt(pos, length)

    def chunk_zTXt(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_zTXt, pos, length)

    def chunk_iTXt(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_iTXt, pos, length)


PngImagePlugin.PngStream = _BoundedPngStream  # type: ignore[misc]  # what PngImageFile opens with


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
        while -(-width // factor) * -(-height // factor) > _WORK_MAX_PIXELS:
            factor += 1
        return factor


def set_max_pixels(max_pixels: int) -> None:
    # Pillow refuses above twice this at open; a JPEG may be 64 times larger in its file than
    # decoded at 1/8 scale, and open_image checks what is decoded.
    Image.MAX_IMAGE_PIXELS = max_pixels * 32


def open_image(
    data: bytes, work: WorkSize | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open (headers only, nothing decoded) and check the pixels that decoding will produce.

    A JPEG is set to decode at 1/2, 1/4 or 1/8 scale (Pillow's draft mode, done by libjpeg while
    decoding) as long as the result still covers the work size.
    """
    if not data:
        raise ApiError(422, "empty_image", "the image is empty (0 bytes)")
    with _decoding_errors():
        image = Image.open(io.BytesIO(data), formats=SUPPORTED)
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ApiError(422, "corrupt_image", f"the image has no pixels ({width}x{height})")
        if _progressive(image) and width * height > max_pixels:
            # libjpeg keeps a progressive JPEG's coefficients for the whole canvas, 2 bytes a
            # sample, whatever the draft scale: its full size is what decoding costs.
            raise ApiError(
                413,
                "image_too_large",
                f"the image is a progressive JPEG of {width}x{height} pixels, decoded at full "
                f"size; the limit is {max_pixels:,} pixels",
            )
        if image.format == "JPEG" and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
            # Each scan of a progressive JPEG is another pass over the whole canvas; libjpeg
            # has no limit of its own. Entropy-coded data stuffs every 0xFF, so the count of
            # start-of-scan markers is the scan count (more, with an EXIF thumbnail's).
            raise ApiError(
                422,
                "corrupt_image",
                f"the JPEG has more than {MAX_JPEG_SCANS} scans (usual ones have at most 12)",
            )
        image.info[_CANVAS] = width * height
        if work and image.format == "JPEG":
            side = max(work.size)  # either orientation (EXIF may rotate it later)
            image.draft(image.mode if image.mode in ("L", "RGB") else None, (side, side))
        if image.width * image.height > max_pixels:
            raise ApiError(
                413,
                "image_too_large",
                f"the image has {width}x{height} pixels; the limit is {max_pixels:,} pixels",
            )
        return image


def decode_cost(image: Image.Image) -> int:
    """The memory decoding an opened image takes, in decoded pixels (3 bytes each at most).

    The pixels it decodes to; for a progressive JPEG, also its 16-bit coefficients of the full
    canvas, which libjpeg holds while it decodes even at a draft scale.
    """
    pixels = image.width * image.height
    if not _progressive(image):
        return pixels
    canvas = int(image.info.get(_CANVAS, pixels))
    layers = len(image.getbands())
    return pixels + -(-2 * layers * canvas // 3)


def _progressive(image: Image.Image) -> bool:
    return image.format == "JPEG" and bool(image.info.get("progressive"))


def decode_image(
    data: bytes | Image.Image,
    work: WorkSize | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode to an upright RGB or L image, reduced to ``work`` first (in 8 bits, in strips)."""
    source = data if isinstance(data, Image.Image) else open_image(data, work, max_pixels)
    with _decoding_errors():
        source.seek(0)  # first frame of animations
        orientation = source.getexif().get(ExifTags.Base.Orientation, 1)
        source.load()
        width, height = source.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        factor = work.factor(width, height) if work else 1
        image = _reduce(source, factor) if factor > 1 else source
        if orientation in _ORIENT:
            image = image.transpose(_ORIENT[orientation])
        image = _normalize_mode(image)
        if image is not source:
            # Frees the full-size pixels now, though the caller may still hold the opened image.
            source.close()
        return image


@contextmanager
def _decoding_errors() -> Iterator[None]:
    try:
        yield
    except ApiError:
        raise
    except Image.DecompressionBombError as error:
        raise ApiError(
            413, "image_too_large", f"the image is too large to decode: {error}"
        ) from error
    except UnidentifiedImageError as error:
        raise ApiError(
            415,
            "unsupported_image",
            "the file is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)",
        ) from error
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as error:
        raise ApiError(422, "corrupt_image", f"the image could not be decoded: {error}") from error
    except MemoryError as error:
        raise ApiError(413, "image_too_large", "the image is too large to decode") from error


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
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype("uint8"), "L")
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


def _background_for(rgba: Image.Image) -> tuple[int, int, int, int]:
    array = np.asarray(rgba)
    alpha = array[..., 3].astype(np.float64) / 255.0
    weight = alpha.sum()
    if weight == 0 or alpha.min() > 0.5:
        return (255, 255, 255, 255)
    luminance = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    opaque_mean = float((luminance * alpha).sum() / weight)
    return (0, 0, 0, 255) if opaque_mean > 160 else (255, 255, 255, 255)
