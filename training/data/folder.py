"""Image-folder datasets: ``train/<class>/*`` and ``test/<class>/*``, decoded with Pillow.

Images are read as the gateway's ``photo`` profile reads what it serves (:mod:`fdl.photo`: EXIF
orientation, alpha composited, 16 bits scaled, the centre region of the input's aspect ratio
resized with Lanczos, then RGB or grey), so a user's own classes can be trained with the MNIST or
the CIFAR architectures and the model sees the same tensors in training and when served (its
``metadata.json`` records the ``photo`` profile: training/artifacts.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from fdl.images import DECODING_ERRORS
from fdl.photo import photo_file_tensor
from training.data import IMAGE_FOLDER, DataMissingError, ImageData

SHUFFLE_SEED = 20160101
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
# What Pillow raises for a file it cannot read: what the gateway answers with 4xx.
_UNREADABLE = (*DECODING_ERRORS, MemoryError, Image.DecompressionBombError)


def is_image_folder(root: Path) -> bool:
    return _class_dirs(root / "train") != [] and (root / "test").is_dir()


def _class_dirs(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        return []
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(
    root: Path,
    name: str,
    image_shape: tuple[int, int, int],
    class_order: Sequence[str] | None = None,
) -> ImageData:
    """Load ``root/train`` and ``root/test``; class ids follow ``class_order`` or sorted names."""
    train_classes = [p.name for p in _class_dirs(root / "train")]
    if not train_classes:
        raise DataMissingError(f"dataset {name!r}: no class folders in {root / 'train'}")
    if len(train_classes) < 2:
        raise DataMissingError(f"dataset {name!r}: {root / 'train'} has fewer than 2 classes")
    if class_order is not None and sorted(class_order) == sorted(train_classes):
        classes = list(class_order)
    else:
        classes = train_classes
    test_classes = [p.name for p in _class_dirs(root / "test")]
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataMissingError(f"dataset {name!r}: test classes {unknown} are not in train/")
    x_train, y_train = _load_split(root / "train", classes, image_shape)
    if len(x_train) == 0:  # else 0 steps of training, and an untrained model published
        raise DataMissingError(f"dataset {name!r}: no images under {root / 'train'}")
    x_test, y_test = _load_split(root / "test", classes, image_shape)
    if len(x_test) == 0:
        raise DataMissingError(f"dataset {name!r}: no images under {root / 'test'}")
    return ImageData(
        name, x_train, y_train, x_test, y_test, tuple(classes), str(root), IMAGE_FOLDER
    )


def _load_split(
    split_dir: Path, classes: list[str], image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                images.append(photo_file_tensor(path, image_shape))
            except _UNREADABLE as error:
                raise DataMissingError(f"cannot read image {path}: {error}") from error
            labels.append(label)
    if not images:
        return np.zeros((0, *image_shape), np.uint8), np.zeros((0,), np.int64)
    # Folders group images by class; a fixed permutation mixes them so that the validation split
    # and capped runs (max_train_examples) see every class.
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(images))
    return np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order]
