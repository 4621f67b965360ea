"""The peers' preprocessing, as KServe's image-transformer sample does it: decode the base64
image, convert it to grey or RGB, resize it to the model's input, return nested lists for a REST
v1 ``{"instances": [...]}`` body. Imported by ``kserve_transformer.py`` and ``litserve_peer.py``
in their own virtual environments: Pillow and NumPy only."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def image_transform(data: str, size: tuple[int, int], channels: int) -> list:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if channels == 1:
        array = array[:, :, None]
    return array.tolist()
