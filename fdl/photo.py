"""The ``photo`` preprocessing profile, the one implementation the gateway serves with and
training's image-folder loader reads with: the centre region of the input's aspect ratio,
resized to the input with Lanczos, then the input's channel count.

An image-folder model is trained on exactly the tensors the gateway sends it
(:func:`photo_tensor` of :func:`fdl.images.upright`, with :func:`photo_work_size`'s reduction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fdl.images import WorkSize, draft, source_box, upright


def photo_work_size(size: tuple[int, int]) -> WorkSize:
    """How far decoding may reduce an image for the photo profile (``size``: the input's W, H).

    The gap is the photo resize's ``reducing_gap`` (3.0), so the reduction done while decoding
    is the one that resize would have done.
    """
    return WorkSize(size, cover=True, gap=3.0)


def photo_to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB pixels of the centre region of ``image`` with the aspect ratio of ``size`` (H, W),
    resized to ``size`` with Lanczos.

    The region is that of the source's pixels (:func:`fdl.images.source_box`): where decoding
    reduced by a factor the source's size is no multiple of, the last row and column cover less
    of it, and count for what they cover, as in Pillow's own ``resize(reducing_gap=...)``.
    """
    height, width = size
    x0, y0, x1, y1 = source_box(image)
    image = image.convert("RGB")
    # The centre region with the input's aspect ratio, resized to the input: the same as
    # resizing to cover and cropping, but never larger than the input, whatever the aspect ratio.
    extent_w, extent_h = x1 - x0, y1 - y0
    scale = max(width / extent_w, height / extent_h)
    box_w, box_h = min(extent_w, width / scale), min(extent_h, height / scale)
    left, top = x0 + (extent_w - box_w) / 2, y0 + (extent_h - box_h) / 2
    resized = image.resize(
        (width, height),
        Image.Resampling.LANCZOS,
        box=(left, top, left + box_w, top + box_h),
        reducing_gap=3.0,
    )
    return np.asarray(resized)


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """A preprocessed H x W (grey) or H x W x 3 (RGB) array as uint8 H x W x ``channels``: RGB
    becomes grey with Pillow's ITU-R 601-2 luma, grey is repeated into 3 channels."""
    if channels == 1 and array.ndim == 3:
        array = np.asarray(Image.fromarray(array).convert("L"))
    if channels == 1:
        array = array[..., np.newaxis]
    elif channels == 3 and array.ndim == 2:
        array = np.repeat(array[..., np.newaxis], 3, axis=-1)
    return array.astype(np.uint8, copy=False)


def photo_tensor(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """A decoded (upright RGB or L) image as the photo profile's H x W x C uint8 tensor."""
    height, width, channels = shape
    return to_channels(photo_to_array(image, (height, width)), channels)


def photo_file_tensor(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file as the tensor the gateway makes of its bytes for a photo-profile model of
    input ``shape`` (H, W, C): the same draft scale, decoding, reduction and resize. Pillow's
    errors are raised as they come (``UnidentifiedImageError``, ``OSError``, ...)."""
    height, width, _ = shape
    work = photo_work_size((width, height))
    with Image.open(path) as opened:
        draft(opened, work)
        return photo_tensor(upright(opened, work), shape)
