"""CIFAR-10 arrays cached before they recorded their layout (``arrays.npz`` without ``layout``)
still load when the tree unpacked beside them was deleted (the arrays were all that loads read,
and the tree is ~180 MB): the tarball's member names say the layout. Before, every job on such a
cache failed, "… holds neither cifar-10-batches-py nor train/ and test/ folders". A tarball
whose names say nothing fails naming the folder to delete.

Real tarballs of exact CIFAR-10 images, real loaders and cache."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_gate_test_set import _exact, jpeg_tarball, python_tarball
from training.data import IMAGE_FOLDER, PYTHON_BATCHES, DataMissingError
from training.data.cifar import load_cifar10, tarball_layout


def as_cached_before(cache: Path) -> None:
    """``arrays.npz`` as a worker from before the layout was recorded wrote it, and its
    unpacked tree deleted."""
    with np.load(cache) as z:
        arrays = {key: z[key] for key in z.files if key != "layout"}
    np.savez(cache, **arrays)
    for entry in cache.parent.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)


@pytest.mark.parametrize(
    ("make", "stem", "layout"),
    [
        (python_tarball, "cifar-10-python", PYTHON_BATCHES),
        (jpeg_tarball, "cifar10-jpeg", IMAGE_FOLDER),
    ],
)
def test_arrays_cached_without_their_layout_and_without_their_tree_still_load(
    make, stem: str, layout: str, data_dir: Path, tmp_path: Path
) -> None:
    x, y = _exact(data_dir)
    make(tmp_path / "data" / "cifar10", x, y)
    var = tmp_path / "var"
    fresh = load_cifar10(tmp_path / "data", var, allow_download=False)
    assert fresh.layout == layout
    cache = var / "cache" / "datasets" / stem / "arrays.npz"
    as_cached_before(cache)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["arrays.npz"]
    again = load_cifar10(tmp_path / "data", var, allow_download=False)
    assert (again.layout, again.source) == (layout, fresh.source)
    np.testing.assert_array_equal(again.x_test, fresh.x_test)
    np.testing.assert_array_equal(again.y_train, fresh.y_train)


def test_a_tarball_whose_names_say_no_layout_fails_naming_the_folder_to_delete(
    data_dir: Path, tmp_path: Path
) -> None:
    x, y = _exact(data_dir)
    jpeg_tarball(tmp_path / "data" / "cifar10", x, y)
    var = tmp_path / "var"
    load_cifar10(tmp_path / "data", var, allow_download=False)
    folder = var / "cache" / "datasets" / "cifar10-jpeg"
    as_cached_before(folder / "arrays.npz")
    tarball = tmp_path / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:  # replaced: nothing in it names a layout
        info = tarfile.TarInfo("README")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    assert tarball_layout(tarball) is None
    with pytest.raises(DataMissingError) as raised:
        load_cifar10(tmp_path / "data", var, allow_download=False)
    assert str(raised.value) == (
        f"{folder / 'arrays.npz'} was cached without the layout of its images, and neither "
        f"{folder} nor {tarball} says it: delete {folder} so that cifar10-jpeg.tar.gz is "
        "unpacked and decoded again"
    )


def test_tarball_member_names_say_the_layout(tmp_path: Path) -> None:
    """At the top or one folder below, as the unpacked tree is looked for; other files first."""

    def tarball(name: str, *members: str) -> Path:
        path = tmp_path / f"{name}.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for member in members:
                info = tarfile.TarInfo(member)
                info.size = 1
                archive.addfile(info, io.BytesIO(b"x"))
        return path

    assert tarball_layout(tarball("a", "cifar-10-batches-py/data_batch_1")) == PYTHON_BATCHES
    assert tarball_layout(tarball("b", "README", "x/cifar-10-batches-py/test_batch")) == (
        PYTHON_BATCHES
    )
    assert tarball_layout(tarball("c", "notes.bin", "./train/cat/0001.png")) == IMAGE_FOLDER
    assert tarball_layout(tarball("d", "export/test/dog/0001.jpg")) == IMAGE_FOLDER
    assert tarball_layout(tarball("e", "a/b/c/train/cat/0001.png", "test_batch")) is None
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    assert tarball_layout(tmp_path / "broken.tar.gz") is None
