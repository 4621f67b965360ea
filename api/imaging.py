"""Decoding user images safely with Pillow: any common format, EXIF orientation, alpha on white."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from api.errors import ApiError

DEFAULT_MAX_PIXELS = 40_000_000
SUPPORTED = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# decode_image checks the pixel count itself (before any pixel is decoded), so Pillow's own
# warning (between its limit and twice that) is redundant; its error (above twice) stays armed.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def set_max_pixels(max_pixels: int) -> None:
    Image.MAX_IMAGE_PIXELS = max_pixels


def decode_image(
    data: bytes,
    target_size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode to an upright RGB or L image.

    ``target_size`` (width, height) lets a JPEG decode at 1/2, 1/4 or 1/8 scale (Pillow's draft
    mode, done by libjpeg while decoding) as long as the result still covers the target.
    """
    if not data:
        raise ApiError(422, "empty_image", "the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED)
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ApiError(422, "corrupt_image", f"the image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise ApiError(
                413,
                "image_too_large",
                f"the image has {width}x{height} pixels; the limit is {max_pixels:,} pixels",
            )
        if target_size and image.format == "JPEG":
            side = max(target_size)  # either orientation (EXIF may rotate it later)
            image.draft(image.mode if image.mode in ("L", "RGB") else None, (side, side))
        image.seek(0)  # first frame of animations
        image.load()
        return _normalize_mode(ImageOps.exif_transpose(image) or image)
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
