"""Read MNIST test digits straight from the IDX files, independently of training/'s loader."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image


def mnist_test_digits(data_dir: Path, count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    folder = data_dir / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images[offset : offset + count], labels[offset : offset + count]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def paper_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as dark ink on light paper, larger and off centre."""
    canvas = np.full((90, 120), 230, np.uint8)
    ink = np.asarray(Image.fromarray(255 - digit).resize((56, 56), Image.Resampling.BILINEAR))
    canvas[20:76, 50:106] = np.minimum(canvas[20:76, 50:106], ink)
    return png_bytes(canvas)
