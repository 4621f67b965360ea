"""``publish.only_if_better`` compares test accuracies on one test set only: a served version of
the same dataset tested on another number of images (``max_test_examples``), or on images stored
otherwise (CIFAR-10's lossy JPEG export against its python batches: other pixels under the same
name), is not comparable. Before, a job tested on one image (1.0) was published "better than the
served version 1 (0.9001)", tested on 10,000 (the new version: 55% on those 10,000).

Versions published before ``metadata.json`` recorded the layout of its dataset are compared when
their source implies it (the files this job read, MNIST's one layout, a user's folder, CIFAR-10's
python batches by their folder's name), and are not comparable otherwise.

Real CIFAR-10 images (the exact first 1,000 test images), real loaders (tarballs unpacked into the
cache, arrays cached and read back), real files. The gate's check on a version published by a
real job: ``test_gate_other_kind.py``."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from training.data import IDX, IMAGE_FOLDER, PYTHON_BATCHES, ImageData
from training.data.cifar import CLASS_NAMES
from training.data.registry import load_dataset
from training.model_kind import ModelKind

SHAPE = (32, 32, 3)
PER_BATCH = 10  # images per python batch: 5 training batches and a test batch
NOT_SAID = (
    "its metadata does not say how its test images were stored (it was published before "
    "versions recorded it, from a copy of the dataset that this one may not be)"
)


def _exact(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """60 exact images, 6 of each class: 5 each for training (the five batches), then one each
    for the test batch (every class in both splits, as an image folder needs)."""
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as z:
        x, y = z["x_test"], z["y_test"].astype(np.int64)
    first = [np.flatnonzero(y == label)[:6] for label in range(len(CLASS_NAMES))]
    order = [i for rank in range(6) for i in (indices[rank] for indices in first)]
    return x[order], y[order]


def _add(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def python_tarball(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """CIFAR-10's official tarball, in small: ``cifar-10-batches-py/`` with its six batches."""
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as archive:
        for i, name in enumerate(names):
            part = slice(PER_BATCH * i, PER_BATCH * (i + 1))
            rows = x[part].transpose(0, 3, 1, 2).reshape(PER_BATCH, -1)
            batch = pickle.dumps({b"data": rows, b"labels": list(y[part])})
            _add(archive, f"cifar-10-batches-py/{name}", batch)


def jpeg_tarball(folder: Path, x: np.ndarray, y: np.ndarray, lossless: bool = False) -> None:
    """An image-folder export as ``cifar10-jpeg.tar.gz`` is: the same images, JPEG quality 75;
    ``lossless``: as PNG files of the same names, in ``cifar10-png.tar.gz``."""
    folder.mkdir(parents=True)
    kind = "png" if lossless else "jpeg"
    with tarfile.open(folder / f"cifar10-{kind}.tar.gz", "w:gz") as archive:
        for index, (image, label) in enumerate(zip(x, y, strict=True)):
            split = "test" if index >= 5 * PER_BATCH else "train"
            encoded = io.BytesIO()
            Image.fromarray(image).save(
                encoded, kind.upper(), **({} if lossless else {"quality": 75})
            )
            name = f"{split}/{CLASS_NAMES[label]}/{index:04d}.{kind.replace('jpeg', 'jpg')}"
            _add(archive, name, encoded.getvalue())


def loaded_twice(data: Path, var: Path) -> ImageData:
    """CIFAR-10 from ``data``, unpacked and decoded, then read again from the cached arrays."""
    first = load_dataset("cifar10", SHAPE, data, var, allow_download=False)
    again = load_dataset("cifar10", SHAPE, data, var, allow_download=False)
    assert (again.layout, again.source) == (first.layout, first.source)
    np.testing.assert_array_equal(again.x_test, first.x_test)
    return again


def recorded(data: ImageData, **changes: Any) -> dict[str, Any]:
    """The served version's metadata as a job on ``data`` writes it (training/artifacts.py),
    with ``changes`` to its ``dataset`` entry (None removes a key: an older version's)."""
    dataset = {
        "name": data.name,
        "source": data.source,
        "layout": data.layout,
        "train": len(data.x_train),
        "validation": 0,
        "test": len(data.x_test),
        "test_sha256": data.test_sha256,
    }
    for key, value in changes.items():
        if value is None:
            dataset.pop(key)
        else:
            dataset[key] = value
    return {
        "dataset": dataset,
        "class_names": list(data.class_names),
        "input": {"key": "images", "dtype": "uint8", "shape": [-1, *data.image_shape]},
    }


@pytest.fixture(scope="module")
def cifar(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageData]:
    """The same 60 CIFAR-10 images from the python batches' tarball, from a JPEG export and from
    a PNG export."""
    x, y = _exact(data_dir)
    root = tmp_path_factory.mktemp("cifar-layouts")
    python_tarball(root / "batches" / "cifar10", x, y)
    jpeg_tarball(root / "jpeg" / "cifar10", x, y)
    jpeg_tarball(root / "png" / "cifar10", x, y, lossless=True)
    return {
        "batches": loaded_twice(root / "batches", root / "batches-var"),
        "jpeg": loaded_twice(root / "jpeg", root / "jpeg-var"),
        "png": loaded_twice(root / "png", root / "png-var"),
    }


def test_cifar10_from_its_python_batches_and_from_a_jpeg_export_are_not_comparable(
    cifar: dict[str, ImageData],
) -> None:
    batches, jpeg = cifar["batches"], cifar["jpeg"]
    assert (batches.layout, jpeg.layout) == (PYTHON_BATCHES, IMAGE_FOLDER)
    assert batches.name == jpeg.name == "cifar10" and len(batches.x_test) == len(jpeg.x_test)
    assert not np.array_equal(np.sort(batches.x_test, axis=None), np.sort(jpeg.x_test, axis=None))
    of_batches, of_jpeg = ModelKind.of(batches, SHAPE), ModelKind.of(jpeg, SHAPE)
    assert of_batches.differences(recorded(jpeg)) == [
        "its test images were read from an image folder, this job's from CIFAR-10's python batches"
    ]
    assert of_jpeg.differences(recorded(batches)) == [
        "its test images were read from CIFAR-10's python batches, this job's from an image folder"
    ]
    assert of_batches.differences(recorded(batches)) == []
    assert of_jpeg.differences(recorded(jpeg)) == []
    # Elsewhere, the same layout: the same test set (a worker's data may be mounted anywhere).
    assert of_jpeg.differences(recorded(jpeg, source="/mnt/other/cifar10-jpeg")) == []


def test_two_image_folder_exports_of_other_pixels_are_not_comparable(
    cifar: dict[str, ImageData],
) -> None:
    """A lossless (PNG) and a lossy (JPEG) export of the same images, both image folders of
    CIFAR-10 with 10 test images: the fingerprint of the test set tells them apart. Before,
    name, layout and size were all compared, and matched."""
    png, jpeg = cifar["png"], cifar["jpeg"]
    assert (png.layout, jpeg.layout) == (IMAGE_FOLDER, IMAGE_FOLDER)
    np.testing.assert_array_equal(png.y_test, jpeg.y_test)  # same files, same order
    assert not np.array_equal(png.x_test, jpeg.x_test) and png.test_sha256 != jpeg.test_sha256
    of_png, of_jpeg = ModelKind.of(png, SHAPE), ModelKind.of(jpeg, SHAPE)
    other = (
        f"its {PER_BATCH} test images are not this job's (the same number, stored the same way, "
        "but other pixels, labels or order: another copy or export of the dataset; "
        "dataset.test_sha256 differs)"
    )
    assert of_png.differences(recorded(jpeg)) == [other]
    assert of_jpeg.differences(recorded(png)) == [other]
    assert of_png.differences(recorded(png, source="/mnt/elsewhere/cifar10")) == []
    # The fingerprint is of the capped test set: the first 5 of each export differ too, and
    # a cap at or above the size leaves the same one.
    assert ModelKind.of(png.capped(None, 5), SHAPE).differences(recorded(jpeg.capped(None, 5)))
    assert ModelKind.of(png.capped(None, 99), SHAPE).differences(recorded(png)) == []
    # A version published before the fingerprint was recorded: compared as before (same name,
    # layout and size are taken for the same test set).
    assert of_png.differences(recorded(jpeg, test_sha256=None)) == []


def test_another_number_of_test_images_is_not_comparable(cifar: dict[str, ImageData]) -> None:
    batches = cifar["batches"]
    one = ModelKind.of(batches.capped(None, 1), SHAPE)
    assert one.test_examples == 1
    assert one.differences(recorded(batches)) == [
        f"it was tested on {PER_BATCH} images, this job on 1 (max_test_examples, or the "
        "dataset's test images, differ)"
    ]
    # A cap at or above the test set's size leaves the same test set.
    assert ModelKind.of(batches.capped(None, 10**8), SHAPE).differences(recorded(batches)) == []
    assert one.differences(recorded(batches, test=None)) == [
        "its metadata does not record the size of its test set"
    ]


def test_versions_from_before_the_layout_was_recorded(
    cifar: dict[str, ImageData], data_dir: Path, tmp_path: Path
) -> None:
    batches, jpeg = cifar["batches"], cifar["jpeg"]
    of_batches, of_jpeg = ModelKind.of(batches, SHAPE), ModelKind.of(jpeg, SHAPE)
    # The files this job read: their layout, whatever their folder's name.
    assert of_jpeg.differences(recorded(jpeg, layout=None, test_sha256=None)) == []
    assert of_batches.differences(recorded(batches, layout=None, test_sha256=None)) == []
    # CIFAR-10's python batches, by their folder's name (the batches' own, or the cache's copy
    # of the official tarball), wherever they were.
    for folder in ("/data/cifar10/cifar-10-batches-py", "/var/cache/datasets/cifar-10-python"):
        old = recorded(batches, source=folder, layout=None, test_sha256=None)
        assert of_batches.differences(old) == [], folder
        assert of_jpeg.differences(old) == [
            "its test images were read from CIFAR-10's python batches, this job's from an "
            "image folder"
        ]
    # Another folder of CIFAR-10: an image folder of some export, or batches renamed.
    old = recorded(jpeg, source="/data/cifar10", layout=None, test_sha256=None)
    assert of_batches.differences(old) == [NOT_SAID]
    assert of_jpeg.differences(old) == [NOT_SAID]
    # MNIST has one layout; a user's dataset is an image folder.
    mnist = load_dataset("mnist", (28, 28, 1), data_dir, tmp_path, allow_download=False)
    of_mnist = ModelKind.of(mnist, (28, 28, 1))
    assert of_mnist.layout == IDX
    assert (
        of_mnist.differences(
            recorded(mnist, source="/elsewhere/mnist", layout=None, test_sha256=None)
        )
        == []
    )
    images, labels = np.zeros((2, 8, 8, 1), np.uint8), np.asarray([0, 1])
    shades = ImageData(
        "shades", images, labels, images, labels, ("a", "b"), "/data/shades", IMAGE_FOLDER
    )
    of_shades = ModelKind.of(shades, (8, 8, 1))
    assert (
        of_shades.differences(recorded(shades, source="/old/shades", layout=None, test_sha256=None))
        == []
    )
    # With no dataset entry at all, nothing says which test set its accuracy is on.
    assert of_mnist.differences({"metrics": {"test_accuracy": 0.9}}) == [
        "its metadata does not record the size of its test set"
    ]
