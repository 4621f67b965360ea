"""Dataset readers: MNIST IDX files, CIFAR-10 batches / folders / tarballs, user folders, and the
messages when data is missing."""

from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from harness.worker import write_image_folder
from training.data import DataMissingError
from training.data.cifar import CLASS_NAMES, load_cifar10
from training.data.mnist import FILES, load_mnist, read_idx
from training.data.registry import load_dataset


def test_real_mnist_idx(data_dir: Path) -> None:
    mnist = load_mnist(data_dir, allow_download=False)
    assert mnist.x_train.shape == (60_000, 28, 28, 1) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10_000, 28, 28, 1)
    assert mnist.y_train[0] == 5 and mnist.y_test[0] == 7
    assert mnist.source == str(data_dir / "mnist")


def test_mnist_in_data_dir_root_and_bad_files(tmp_path: Path, data_dir: Path) -> None:
    for name in FILES.values():
        shutil.copy(data_dir / "mnist" / name, tmp_path / name)
    assert load_mnist(tmp_path, allow_download=False).source == str(tmp_path)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)


def test_missing_mnist_names_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as error:
        load_mnist(tmp_path, allow_download=False)
    message = str(error.value)
    assert all(name in message for name in FILES.values())
    assert str(tmp_path / "mnist") in message and "downloads are disabled" in message


def test_missing_cifar_names_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"cifar-10-batches-py.*" + str(tmp_path)):
        load_cifar10(tmp_path, tmp_path / "var", allow_download=False)


def _exact(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as z:
        return z["x_test"][:60], z["y_test"][:60].astype(np.int64)


def test_cifar_python_batches(tmp_path: Path, data_dir: Path) -> None:
    x, y = _exact(data_dir)
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        part = slice(10 * i, 10 * i + 10)
        rows = x[part].transpose(0, 3, 1, 2).reshape(10, -1)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": rows, b"labels": list(y[part])}, handle)
    data = load_cifar10(tmp_path, tmp_path / "var", allow_download=False)
    np.testing.assert_array_equal(data.x_train, x[:50])
    np.testing.assert_array_equal(data.x_test, x[50:])
    assert data.class_names == CLASS_NAMES


def test_cifar_tarball_unpacked_once_into_the_cache(tmp_path: Path, data_dir: Path) -> None:
    x, y = _exact(data_dir)
    export = tmp_path / "export"
    write_image_folder(export / "train", x[:40], y[:40], CLASS_NAMES)
    write_image_folder(export / "test", x[40:], y[40:], CLASS_NAMES)
    read_only = tmp_path / "data" / "cifar10"
    read_only.mkdir(parents=True)
    with tarfile.open(read_only / "cifar10-png.tar.gz", "w:gz") as archive:
        archive.add(export / "train", "train")
        archive.add(export / "test", "test")
    read_only.chmod(0o555)
    try:
        var = tmp_path / "var"
        data = load_cifar10(tmp_path / "data", var, allow_download=False)
        cache = var / "cache" / "datasets" / "cifar10-png"
        assert (cache / "train" / "cat").is_dir() and (cache / "arrays.npz").is_file()
        assert sorted(p.name for p in read_only.iterdir()) == ["cifar10-png.tar.gz"]
        # PNG is lossless: the same images and labels, mixed by a fixed permutation.
        assert sorted(map(bytes, data.x_train)) == sorted(map(bytes, x[:40]))
        assert sorted(data.y_train.tolist()) == sorted(y[:40].tolist())
        assert data.y_train[:10].tolist() != sorted(data.y_train[:10].tolist())
        pairs = {bytes(img): int(lbl) for img, lbl in zip(x[:40], y[:40], strict=True)}
        assert all(
            pairs[bytes(i)] == lbl for i, lbl in zip(data.x_train, data.y_train, strict=True)
        )
        shutil.rmtree(cache / "train")  # a second load uses the cached arrays
        again = load_cifar10(tmp_path / "data", var, allow_download=False)
        np.testing.assert_array_equal(again.x_test, data.x_test)
    finally:
        read_only.chmod(0o755)


def test_user_folder_converted_for_the_architecture(small_data_dir: Path) -> None:
    gray = load_dataset("shapes", (28, 28, 1), small_data_dir, small_data_dir / "var", False)
    assert gray.x_train.shape == (60, 28, 28, 1) and gray.class_names == (
        "circle",
        "noise",
        "stripes",
    )
    rgb = load_dataset("shapes", (32, 32, 3), small_data_dir, small_data_dir / "var", False)
    assert rgb.x_test.shape == (15, 32, 32, 3)
    assert np.bincount(rgb.y_test).tolist() == [5, 5, 5]


def test_folder_with_unknown_test_class_is_rejected(tmp_path: Path) -> None:
    img = np.zeros((1, 8, 8, 3), np.uint8)
    write_image_folder(tmp_path / "ds" / "train", img, [0], ["a"])
    write_image_folder(tmp_path / "ds" / "train", img, [0], ["b"])
    write_image_folder(tmp_path / "ds" / "test", img, [0], ["c"])
    with pytest.raises(DataMissingError, match=r"test classes \['c'\]"):
        load_dataset("ds", (28, 28, 1), tmp_path, tmp_path, False)
