"""A dataset with no training images fails the job with a readable ``DataMissingError`` that
names where the images were looked for, as an empty ``test/`` already did: before, an image
folder whose ``train/`` class folders were empty trained 0 steps and published an untrained
model (and MNIST files of no images would have done the same).

Real Redis, real TensorFlow, real files."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdl.jobs import JobStore
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db
from training.data import DataMissingError
from training.data.mnist import FILES, IMAGE_MAGIC, LABEL_MAGIC
from training.data.registry import load_dataset

DB = 10


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def empty_train_folder(root: Path) -> Path:
    """Two classes, each with an empty ``train/`` folder (a text file in one) and test images."""
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        (root / "test" / cls).mkdir(parents=True)
        for index in range(2):
            Image.new("L", (28, 28), 60 * index).save(root / "test" / cls / f"{index}.png")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    return root


def idx(path: Path, magic: int, dims: list[int], data: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + data.astype(np.uint8).tobytes()))


def test_an_image_folder_whose_train_folders_are_empty_fails_the_job(
    store: JobStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    root = empty_train_folder(data_dir / "emptytrain")
    settings = settings_for(data_dir, tmp_path)
    result, record = run_spec(
        store, "emptytrain", settings, model="mnist_logreg", dataset="emptytrain", epochs=1,
        batch_size=4, validation_split=0, publish_as="m",
    )  # fmt: skip
    assert result is None
    assert record["status"] == "failed"
    assert root == data_dir / "emptytrain"
    # The worker's data folder shown by its setting (training/error_paths.py).
    assert record["error"] == "dataset 'emptytrain': no images under $FDL_DATA_DIR/emptytrain/train"
    assert not (settings.model_dir / "m").exists()


def test_mnist_files_of_no_training_images_fail_the_load(tmp_path: Path) -> None:
    """Well-formed IDX files that hold 0 training images (and 3 test images)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for key, count in (("x_train", 0), ("x_test", 3)):
        pixels = np.zeros((count, 28, 28), np.uint8)
        idx(folder / FILES[key], IMAGE_MAGIC, [count, 28, 28], pixels)
        label_key = key.replace("x_", "y_")
        idx(folder / FILES[label_key], LABEL_MAGIC, [count], np.zeros(count, np.uint8))
    with pytest.raises(DataMissingError, match=rf"^dataset 'mnist' in {folder} has no training"):
        load_dataset("mnist", (28, 28, 1), tmp_path, tmp_path / "var", allow_download=False)
