"""Resolve a job's ``dataset`` to arrays shaped for its architecture."""

from __future__ import annotations

from pathlib import Path

from training.data import DataMissingError, ImageData
from training.data.cifar import load_cifar10
from training.data.folder import is_image_folder, load_image_folder
from training.data.mnist import load_mnist


def load_dataset(
    name: str,
    image_shape: tuple[int, int, int],
    data_dir: Path,
    var_dir: Path,
    allow_download: bool = True,
    timeout_s: float = 60,
) -> ImageData:
    if name == "mnist":
        data = load_mnist(data_dir, allow_download, timeout_s)
    elif name == "cifar10":
        data = load_cifar10(data_dir, var_dir, allow_download, timeout_s)
    else:
        root = data_dir / name
        if not is_image_folder(root):
            raise DataMissingError(
                f"dataset {name!r} not found: expected {root}/train/<class>/* and "
                f"{root}/test/<class>/* (FDL_DATA_DIR={data_dir})"
            )
        return load_image_folder(root, name, image_shape)
    for split, images in (("training", data.x_train), ("test", data.x_test)):
        if len(images) == 0:  # files of no images: a model trained on nothing is no model
            raise DataMissingError(f"dataset {name!r} in {data.source} has no {split} images")
    if data.image_shape != image_shape:
        raise DataMissingError(
            f"dataset {name!r} has images of shape {data.image_shape}, the architecture "
            f"needs {image_shape}"
        )
    return data
