"""MNIST from the four original IDX ``.gz`` files (downloaded when absent and allowed; what a
download that crashed left, its ``.part`` file, is swept by the next one:
:mod:`training.data.leftovers`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from training.data import IDX, DataMissingError, ImageData
from training.data.download import download
from training.data.leftovers import filling

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
MIRROR = "https://storage.googleapis.com/cvdf-datasets/mnist/"
CLASS_NAMES = tuple(str(i) for i in range(10))
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
# Downloads in progress (training.data.download's temporaries), in the folder they go to.
LEFTOVERS = tuple(f".{name}.*.part" for name in FILES.values())


def read_idx(path: Path) -> np.ndarray:
    """Parse one (gzipped) IDX file: big-endian magic, counts and dimensions, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise ValueError(f"{path} is not an MNIST IDX file (magic {magic})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for dimensions {dims}")
    return data.reshape(dims)


def find_mnist(data_dir: Path) -> Path | None:
    for folder in (data_dir / "mnist", data_dir):
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    return None


def load_mnist(data_dir: Path, allow_download: bool = True, timeout_s: float = 60) -> ImageData:
    folder = find_mnist(data_dir)
    if folder is None:
        folder = data_dir / "mnist"
        if allow_download:
            try:
                with filling(folder, LEFTOVERS):
                    for name in FILES.values():
                        if not (folder / name).is_file():
                            download(MIRROR + name, folder / name, timeout_s)
            except OSError as error:
                raise DataMissingError(_missing(data_dir, f"download failed: {error}")) from error
        else:
            raise DataMissingError(_missing(data_dir, "downloads are disabled"))
    arrays = {key: read_idx(folder / name) for key, name in FILES.items()}
    return ImageData(
        name="mnist",
        x_train=arrays["x_train"][..., np.newaxis],
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"][..., np.newaxis],
        y_test=arrays["y_test"].astype(np.int64),
        class_names=CLASS_NAMES,
        source=str(folder),
        layout=IDX,
    )


def _missing(data_dir: Path, why: str) -> str:
    names = ", ".join(FILES.values())
    return (
        f"MNIST not found: expected {names} in {data_dir / 'mnist'} or {data_dir} "
        f"(FDL_DATA_DIR); {why}"
    )
