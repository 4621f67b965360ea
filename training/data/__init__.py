"""Datasets as uint8 arrays: MNIST (IDX files), CIFAR-10 (python batches, image folders, tarballs)
and users' own image-folder datasets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# How a dataset's images were stored (``ImageData.layout``, ``metadata.json``'s
# ``dataset.layout``): test sets of one dataset stored otherwise hold other pixels (CIFAR-10's
# JPEG export against its original python batches) or another order (an image folder's).
IDX = "idx"  # MNIST's IDX files
PYTHON_BATCHES = "python_batches"  # CIFAR-10's original python batches
IMAGE_FOLDER = "image_folder"  # train/<class>/*, test/<class>/*, decoded with Pillow
LAYOUTS = {
    IDX: "MNIST's IDX files",
    PYTHON_BATCHES: "CIFAR-10's python batches",
    IMAGE_FOLDER: "an image folder",
}


class DataMissingError(RuntimeError):
    """The data a job needs is absent and could not be downloaded; the message says what/where."""


@dataclass(frozen=True)
class ImageData:
    name: str
    x_train: np.ndarray  # uint8 [N, H, W, C]
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the data was read from, for metadata.json
    layout: str  # how its images were stored: IDX, PYTHON_BATCHES or IMAGE_FOLDER

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @cached_property
    def test_sha256(self) -> str:
        """The test set's fingerprint (``metadata.json``'s ``dataset.test_sha256``): SHA-256 of
        its images' and labels' dtypes, shapes and bytes, in their order. Two test sets of one
        name, size and layout (two image-folder exports of CIFAR-10, one lossless and one
        lossy) differ by it. It takes ~0.02 s for CIFAR-10's 10,000 images."""
        digest = hashlib.sha256()
        for array in (self.x_test, self.y_test.astype(np.int64, copy=False)):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(array.reshape(-1).view(np.uint8))
        return digest.hexdigest()

    def capped(self, max_train: int | None, max_test: int | None) -> ImageData:
        return ImageData(
            self.name,
            self.x_train[:max_train],
            self.y_train[:max_train],
            self.x_test[:max_test],
            self.y_test[:max_test],
            self.class_names,
            self.source,
            self.layout,
        )
