"""MNIST from the four original IDX ``.gz`` files (downloaded when absent and allowed; what a
download that crashed left, its ``.part`` file, is swept by the next one:
:mod:`training.data.leftovers`)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from training.data import IDX, DataMissingError, ImageData
from training.data.download import download
from training.data.errors import FIX, READ_ERRORS, DataUnreadableError, check_labels, unreadable
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
CHUNK = 1 << 20  # bytes decompressed per read
MAX_COUNTED = 1 << 26  # trailing bytes counted for the message before it says "at least"


def read_idx(path: Path) -> np.ndarray:
    """Parse one (gzipped) IDX file: big-endian magic, counts and dimensions, then uint8 data.

    Reads exactly what the header's dimensions need, plus a look past it for trailing data, in
    chunks: a file whose data runs on (gigabytes of zeros after a valid header) costs no more
    memory than a valid one. A damaged file raises :class:`DataUnreadableError` naming it."""
    try:
        with gzip.open(path, "rb") as handle:
            head = handle.read(4)
            magic = int.from_bytes(head, "big")
            if len(head) < 4 or magic not in (IMAGE_MAGIC, LABEL_MAGIC):
                raise DataUnreadableError(f"{path} is not an MNIST IDX file (magic {magic}): {FIX}")
            ndim = head[3]
            dims_raw = handle.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataUnreadableError(f"{path} is truncated: its header ends early: {FIX}")
            dims = [int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim)]
            size = math.prod(dims)
            data = bytearray()
            while len(data) < size and (chunk := handle.read(min(CHUNK, size - len(data)))):
                data += chunk
            if len(data) < size:
                raise DataUnreadableError(
                    f"{path} is truncated: {len(data)} bytes of data for dimensions {dims} "
                    f"({size} bytes): {FIX}"
                )
            extra = 0
            while extra < MAX_COUNTED and (chunk := handle.read(CHUNK)):
                extra += len(chunk)
    except READ_ERRORS as error:
        raise unreadable(path, error) from error
    if extra:
        more = f"{extra} bytes" if extra < MAX_COUNTED else f"at least {MAX_COUNTED} bytes"
        raise DataUnreadableError(
            f"{path} has {more} more than its header's dimensions {dims} need: {FIX}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


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
    for split in ("train", "test"):
        check_pair(folder, arrays[f"x_{split}"], arrays[f"y_{split}"], split)
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


def check_pair(folder: Path, images: np.ndarray, labels: np.ndarray, split: str) -> None:
    """The images and labels of ``split`` fit each other: images of 28x28, one label (0-9)
    each; else a :class:`DataUnreadableError` naming the files (not a TensorFlow error later)."""
    x_path, y_path = folder / FILES[f"x_{split}"], folder / FILES[f"y_{split}"]
    if images.ndim != 3:
        raise DataUnreadableError(f"{x_path} holds no images: dimensions {list(images.shape)}")
    if labels.ndim != 1:
        raise DataUnreadableError(f"{y_path} holds no labels: dimensions {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataUnreadableError(
            f"{x_path} holds {len(images)} images but {y_path} holds {len(labels)} labels: "
            "the two files must come from one copy of MNIST"
        )
    check_labels(y_path, labels, len(CLASS_NAMES))


def _missing(data_dir: Path, why: str) -> str:
    names = ", ".join(FILES.values())
    return (
        f"MNIST not found: expected {names} in {data_dir / 'mnist'} or {data_dir} "
        f"(FDL_DATA_DIR); {why}"
    )
