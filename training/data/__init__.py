"""Datasets as uint8 arrays: MNIST (IDX files), CIFAR-10 (python batches, image folders, tarballs)
and users' own image-folder datasets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    def capped(self, max_train: int | None, max_test: int | None) -> ImageData:
        return ImageData(
            self.name,
            self.x_train[:max_train],
            self.y_train[:max_train],
            self.x_test[:max_test],
            self.y_test[:max_test],
            self.class_names,
            self.source,
        )
