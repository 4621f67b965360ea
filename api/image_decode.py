"""Decoding a request's images to upright RGB or L with :func:`fdl.images.upright` (the decoding
training's image-folder loader uses too), within the gateway's limits and with Pillow's errors
as the gateway's (:mod:`api.image_open`)."""

from __future__ import annotations

from PIL import Image

from api.image_open import DEFAULT_MAX_PIXELS, decoding_errors, open_image
from fdl.images import WorkSize, upright


def decode_image(
    data: bytes | Image.Image,
    work: WorkSize | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode to an upright RGB or L image, reduced to ``work`` first (in 8 bits, in strips)."""
    source = data if isinstance(data, Image.Image) else open_image(data, work, max_pixels)
    with decoding_errors():
        return upright(source, work)
