"""Decoding user images safely with Pillow: any common format, EXIF orientation, alpha on white."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from api.errors import ApiError

# Above this many pixels an image is refused before it is decoded (decompression bombs).
MAX_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def decode_image(data: bytes, target_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode to an upright RGB or L image; ``target_size`` lets JPEGs decode at reduced scale."""
    if not data:
        raise ApiError(422, "empty_image", "the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"the image has {width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels",
                )
            if target_size and image.format == "JPEG":
                # Pillow's draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale, still >= target.
                image.draft("RGB", target_size)
            image.seek(0)  # first frame of animations
            image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ApiError(
            413, "image_too_large", f"the image is too large to decode: {error}"
        ) from error
    except UnidentifiedImageError as error:
        raise ApiError(
            415,
            "unsupported_image",
            "the file is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)",
        ) from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ApiError(422, "corrupt_image", f"the image could not be decoded: {error}") from error
    return _normalize_mode(ImageOps.exif_transpose(image) or image)


def _normalize_mode(image: Image.Image) -> Image.Image:
    """Any mode to RGB or L: palettes expanded, 16-bit scaled, CMYK converted, alpha on white."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype("uint8"), "L")
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("RGB", "L") and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image
