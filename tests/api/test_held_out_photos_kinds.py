"""The digit profile's accuracy per held-out photo kind (``tests/api/held_out_render.py``: real
MNIST test digits as users photograph, scan or draw them), through the gateway's decoding and
preprocessing (no servers needed). The classifier is a fixed one that needs no training run: the
3 nearest of 20,000 MNIST training digits (L2 on the 28x28 tensors; 0.97 on the MNIST test
digits as they are). Seeded: the same images every run."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import pytest

from api.decoding import prepare_batch
from harness.mnist import mnist_test_digits
from tests.api.held_out_render import BIG_INKS, KINDS, clean_page
from tests.api.test_preprocess_scenes import SPEC, _correlation

# Accuracy floors on COUNT digits (BIG_COUNT for the 12 MP photos). Measured on 200 digits per
# kind (100 for the 12 MP ones) with this classifier: every kind 0.97 to 1.00 but the marker
# (0.94).
FLOORS = {
    "mnist_png": 0.9,
    "paper": 0.9,
    "gradient": 0.9,
    "jpeg_low": 0.9,
    "rotated": 0.85,
    "blurred": 0.9,
    "blue_pen": 0.9,
    "lined": 0.9,
    "squared": 0.9,
    "inverted": 0.9,
    "marker": 0.8,
    # Before: 0.11 (the toolbar's icons and the palette's swatches joined the digit's box); now
    # 0.995 (pieces near the frame's edge, well apart from the digit, are no part of it).
    "screenshot": 0.85,
    # Before: 0.09 (the dim sheet, median at most 127, was no paper: the sheet read as the ink).
    "dim_desk": 0.85,
    # Before as after (this classifier, and the trained CNN nearly, read the blurred digits
    # right): what failed is the tensor, below.
    "small_in_big": 0.9,
    "small_pen": 0.9,
}
# A small digit in a 12 MP photo: the median agreement (correlation) of its tensor with that of
# the same ink on a clean page. Before: 0.82 and 0.70 on these digits (read at the 256-pixel work
# size, 7 pixels tall, and scaled up: a blur); now 0.94 and 0.86.
AGREEMENT_FLOORS = {"small_in_big": 0.88, "small_pen": 0.78}
COUNT = 40
BIG_COUNT = 20
_NEIGHBOURS = 3
_TRAINING = 20_000


@pytest.fixture(scope="module")
def neighbours(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = data_dir / "mnist"
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images[:_TRAINING].astype(np.float32), labels[:_TRAINING]


def classify(batch: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The majority of the 3 nearest training digits (the nearest when all three differ)."""
    train, labels = neighbours
    queries = batch.reshape(len(batch), -1).astype(np.float32)
    distances = (train * train).sum(axis=1)[None] - 2 * queries @ train.T
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :_NEIGHBOURS]
    votes = labels[nearest]
    answers = []
    for vote in votes:
        counts = np.bincount(vote, minlength=10)
        answers.append(int(vote[0]) if counts.max() == 1 else int(counts.argmax()))
    return np.array(answers)


@pytest.mark.parametrize("kind", list(FLOORS))
def test_each_kind_is_read_as_its_digit(
    kind: str, data_dir: Path, neighbours: tuple[np.ndarray, np.ndarray]
) -> None:
    count = BIG_COUNT if kind.startswith("small") else COUNT
    digits, labels = mnist_test_digits(data_dir, count, offset=5000)
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    blobs = [KINDS[kind](digit, rng) for digit in digits]
    batch = prepare_batch(blobs, SPEC, "digit", 10**8, "test")[..., 0]
    accuracy = float((classify(batch, neighbours) == labels).mean())
    assert accuracy >= FLOORS[kind], accuracy
    if kind in AGREEMENT_FLOORS:
        clean = [clean_page(BIG_INKS[kind](digit)) for digit in digits]
        reference = prepare_batch(clean, SPEC, "digit", 10**8, "test")[..., 0]
        agreement = [_correlation(s, r) for s, r in zip(batch, reference, strict=True)]
        assert np.median(agreement) >= AGREEMENT_FLOORS[kind], agreement
