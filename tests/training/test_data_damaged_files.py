"""Damaged data files fail a job with a ``DataUnreadableError`` that names the file, says what is
wrong with it and what to do, after one attempt: before, a truncated MNIST ``.gz`` failed with
"EOFError: Compressed file ended before the end-of-stream marker was reached", a CIFAR batch cut
in half with "UnpicklingError: pickle data was truncated", 59,000 labels for 60,000 images with a
TensorFlow graph error. A damaged ``arrays.npz`` cache is decoded again (before, every later
CIFAR-10 job failed "BadZipFile"), and an IDX file whose data runs on past its header's
dimensions is read with bounded memory (before, all of it was decompressed into memory).

Real MNIST and CIFAR-10 files, cut or altered; a real worker for the job's end."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from harness.worker import MNIST_TINY, worker_running
from tests.training.test_empty_training_data import idx
from tests.training.test_gate_test_set import _exact, python_tarball
from training.data import DataMissingError
from training.data.cifar import load_batches, load_cifar10
from training.data.errors import FIX, DataUnreadableError
from training.data.mnist import FILES, IMAGE_MAGIC, LABEL_MAGIC, load_mnist, read_idx
from training.job import failure_message

ENDS_EARLY = "is not a complete gzip file (it ends early): " + FIX


def cut(path: Path, keep: float = 0.5) -> Path:
    """``path`` cut to ``keep`` of its size, as a copy that stopped early leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def mnist_copy(data_dir: Path, root: Path) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in FILES.values():
        shutil.copy(data_dir / "mnist" / name, folder / name)
    return folder


def small_mnist(root: Path, labels: dict[str, np.ndarray]) -> Path:
    """IDX files of as many blank images as ``labels`` has for each split, unless given."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        y = labels.get(f"y_{split}", np.zeros(4, np.uint8))
        count = int(labels.get(f"count_{split}", len(y)))  # type: ignore[arg-type]
        idx(folder / FILES[f"x_{split}"], IMAGE_MAGIC, [count, 28, 28], np.zeros((count, 28, 28)))
        idx(folder / FILES[f"y_{split}"], LABEL_MAGIC, [len(y)], y)
    return folder


def test_a_truncated_mnist_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    folder = mnist_copy(data_dir, tmp_path)
    path = cut(folder / FILES["x_train"])
    with pytest.raises(DataUnreadableError) as raised:
        load_mnist(tmp_path, allow_download=False)
    assert str(raised.value) == f"{path} {ENDS_EARLY}"


def test_a_file_that_is_not_gzip_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"3F" + bytes(100))
    with pytest.raises(DataUnreadableError) as raised:
        read_idx(path)
    assert str(raised.value).startswith(f"{path} is not a gzip file (Not a gzipped file")
    assert str(raised.value).endswith(FIX)


def test_labels_and_images_of_different_counts_are_refused(tmp_path: Path) -> None:
    folder = small_mnist(tmp_path, {"y_train": np.zeros(5, np.uint8), "count_train": 6})
    with pytest.raises(DataUnreadableError) as raised:
        load_mnist(tmp_path, allow_download=False)
    assert str(raised.value) == (
        f"{folder / FILES['x_train']} holds 6 images but {folder / FILES['y_train']} holds 5 "
        "labels: the two files must come from one copy of MNIST"
    )


def test_a_label_outside_0_to_9_is_refused(tmp_path: Path) -> None:
    folder = small_mnist(tmp_path, {"y_test": np.array([1, 2, 200, 3], np.uint8)})
    with pytest.raises(DataUnreadableError) as raised:
        load_mnist(tmp_path, allow_download=False)
    assert str(raised.value) == (
        f"{folder / FILES['y_test']} has 1 labels outside 0-9 (label 200 at index 2): {FIX}"
    )


def test_trailing_data_is_named_and_read_with_bounded_memory(tmp_path: Path) -> None:
    small = tmp_path / "small.gz"
    small.write_bytes(gzip.compress(IMAGE_MAGIC.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in (2, 28, 28)) + bytes(2 * 28 * 28 + 5)))  # fmt: skip
    with pytest.raises(DataUnreadableError) as raised:
        read_idx(small)
    assert str(raised.value) == (
        f"{small} has 5 bytes more than its header's dimensions [2, 28, 28] need: {FIX}"
    )
    # MNIST's training images (47 MB) followed by 400 MB of zeros (a 0.4 MB file).
    big = tmp_path / "train-images-idx3-ubyte.gz"
    zeros = bytes(1 << 20)
    with gzip.open(big, "wb") as out:
        out.write(IMAGE_MAGIC.to_bytes(4, "big"))
        out.write(b"".join(d.to_bytes(4, "big") for d in (60_000, 28, 28)))
        for _ in range(45 + 400):
            out.write(zeros)
    tracemalloc.start()
    try:
        with pytest.raises(DataUnreadableError, match="more than its header's dimensions"):
            read_idx(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20, f"peak {peak >> 20} MiB for a file whose data is 45 MiB"


def test_cifar_batch_cut_in_half_is_named(data_dir: Path, tmp_path: Path) -> None:
    x, y = _exact(data_dir)
    python_tarball(tmp_path / "packed", x, y)
    shutil.unpack_archive(tmp_path / "packed" / "cifar-10-python.tar.gz", tmp_path / "data")
    folder = tmp_path / "data" / "cifar-10-batches-py"
    path = cut(folder / "data_batch_3")
    with pytest.raises(DataUnreadableError) as raised:
        load_cifar10(tmp_path / "data", tmp_path / "var", allow_download=False)
    assert (
        str(raised.value) == f"{path} is not a complete CIFAR-10 batch file (it ends early): {FIX}"
    )
    with open(folder / "data_batch_3", "wb") as handle:  # whole, but with a label of 10
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}, handle)
    with pytest.raises(
        DataUnreadableError, match=r"has 1 labels outside 0-9 \(label 10 at index 1"
    ):
        load_batches(folder)


def test_a_cifar_tarball_cut_short_is_named(tarball: Path, tmp_path: Path) -> None:
    cut(tarball)
    var = tmp_path / "var"
    with pytest.raises(DataUnreadableError) as raised:
        load_cifar10(tarball.parent.parent, var, allow_download=False)
    assert str(raised.value) == f"{tarball} is not a complete tar.gz file (it ends early): {FIX}"
    assert [p.name for p in (var / "cache" / "datasets").iterdir()] == [".fill.lock"]


def test_a_damaged_cifar_cache_is_decoded_again(
    tarball: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, var = tarball.parent.parent, tmp_path / "var"
    first = load_cifar10(data, var, allow_download=False)
    cache = var / "cache" / "datasets" / "cifar10-png" / "arrays.npz"
    cut(cache)
    with caplog.at_level(logging.WARNING, "training.data.cifar"):
        again = load_cifar10(data, var, allow_download=False)
    assert f"{cache} cannot be read (BadZipFile" in caplog.text
    np.testing.assert_array_equal(again.x_train, first.x_train)
    with np.load(cache) as z:  # written whole again, under a temporary name
        np.testing.assert_array_equal(z["y_test"], first.y_test)
    left = sorted(p.name for p in cache.parent.iterdir())
    assert left == ["arrays.npz", "notes.bin", "test", "train"]
    cut(cache)  # and with the tree it was decoded from deleted: the folder to delete is named
    shutil.rmtree(cache.parent / "train")
    with pytest.raises(DataMissingError, match=f"delete {cache.parent} so that"):
        load_cifar10(data, var, allow_download=False)


def test_a_memory_error_says_what_to_do() -> None:
    assert failure_message(MemoryError()) == (
        "out of memory while training (MemoryError): lower batch_size or max_train_examples, "
        "or give the worker more memory"
    )
    assert failure_message(ValueError("bad")) == "ValueError: bad"


def test_a_job_on_a_truncated_mnist_file_fails_once_naming_it(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    folder = mnist_copy(data_dir, tmp_path / "data")
    path = cut(folder / FILES["y_train"])
    # A queue of its own: the session's worker (data intact) would take the job from the same
    # Redis's test queue where an earlier module of this process started it.
    own_queue = {"FDL_TRAINING_QUEUE": f"fdl-tests-damaged-data-{os.getpid()}"}
    with worker_running(
        "damaged-data-worker",
        redis_url,
        tmp_path / "data",
        tmp_path / "worker",
        logs_dir,
        own_queue,
    ) as worker:
        job_id = worker.submit(model="mnist_logreg", publish_as="damaged", **MNIST_TINY)
        record = worker.wait_done(job_id, timeout=120)
    assert record["status"] == "failed", record
    # The worker's data folder shown by its setting (training/error_paths.py).
    assert path == tmp_path / "data" / "mnist" / FILES["y_train"]
    assert record["error"] == f"$FDL_DATA_DIR/mnist/{FILES['y_train']} {ENDS_EARLY}"
    assert int(record["attempts"]) == 1
