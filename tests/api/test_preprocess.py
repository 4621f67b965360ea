"""The digit and photo profiles on rendered real MNIST digits (no servers needed)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.classification import _small
from api.decoding import prepare_batch
from api.image_decode import decode_image
from api.input_spec import InputSpec
from api.preprocess import _median, decode_size, digit_to_mnist, photo_to_array
from harness.mnist import mnist_test_digits, png_bytes
from harness.procs import REPO_ROOT


def _renderer():
    path = REPO_ROOT / "bench" / "gateway_render.py"
    spec = importlib.util.spec_from_file_location("gateway_render", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


@pytest.mark.parametrize("kind", ["photo_of_paper", "transparent_drawing"])
def test_rendered_digits_come_back_as_mnist(data_dir: Path, kind: str) -> None:
    render = getattr(_renderer(), kind)
    digits, _ = mnist_test_digits(data_dir, 40)
    rng = np.random.default_rng(0)
    scores = []
    spec = InputSpec(version=1, input_key="images", dtype="DT_UINT8", shape=(-1, 28, 28, 1))
    # The gateway's own path: decode (with JPEG draft mode) + the digit profile.
    batch = prepare_batch([render(d, rng) for d in digits], spec, "digit", 10**8, "test")
    assert batch.shape == (40, 28, 28, 1)
    for digit, restored in zip(digits, batch[..., 0], strict=True):
        assert restored.shape == (28, 28) and restored.dtype == np.uint8
        # MNIST form: ink fits 20x20, centre of mass near the centre, black border.
        rows = np.flatnonzero(restored.max(axis=1) > 0)
        cols = np.flatnonzero(restored.max(axis=0) > 0)
        assert rows[-1] - rows[0] < 21 and cols[-1] - cols[0] < 21
        ys, xs = np.indices(restored.shape)
        mass = restored.astype(np.float64) / restored.sum()
        assert abs((ys * mass).sum() - 14.0) < 1.0 and abs((xs * mass).sum() - 14.0) < 1.0
        scores.append(_correlation(restored, digit))
    assert np.median(scores) > 0.85, scores
    assert min(scores) > 0.5, scores


def test_mnist_digits_pass_through_almost_unchanged(data_dir: Path) -> None:
    """A digit that already is MNIST-shaped comes back (nearly) as it was."""
    digits, _ = mnist_test_digits(data_dir, 100, offset=500)
    spec = InputSpec(version=1, input_key="images", dtype="DT_UINT8", shape=(-1, 28, 28, 1))
    batch = prepare_batch([png_bytes(d) for d in digits], spec, "digit", 10**8, "test")
    scores = [_correlation(r, d) for r, d in zip(batch[..., 0], digits, strict=True)]
    assert np.median(scores) > 0.95, scores


def test_uneven_lighting_does_not_become_ink() -> None:
    """A blank sheet under a strong gradient and noise has no digit in it."""
    _ys, xs = np.mgrid[0:300, 0:400]
    light = 0.5 + 0.5 * xs / 400
    page = 235 * light + np.random.default_rng(0).normal(0, 5, light.shape)
    page[100:200, 180:195] *= 0.2  # one dark stroke
    restored = digit_to_mnist(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)))
    cols = np.flatnonzero(restored.max(axis=0) > 0)
    assert cols[-1] - cols[0] <= 6, "the gradient was taken for ink"


def test_photo_profile_and_draft_decoding() -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((4000, 3000))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=80)
    decoded = decode_image(buffer.getvalue(), decode_size("photo", (224, 224)))
    assert decoded.size == (500, 375)  # decoded at 1/8 scale, still covering 224x224
    array = photo_to_array(decoded, (224, 224))
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    wide = photo_to_array(Image.new("RGB", (300, 100), (255, 0, 0)), (32, 32))
    assert wide.shape == (32, 32, 3) and (wide == (255, 0, 0)).all()


@pytest.mark.parametrize("size", [1, 2, 7, 28, 784, 1001])
def test_median_is_numpys(size: int) -> None:
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, size, dtype=np.uint8)
    for values in (pixels, pixels.astype(np.float64), rng.normal(0, 50, size)):
        assert _median(values) == np.median(values)
        assert _median(values.reshape(1, -1)) == np.median(values)
    # Pixels are uint8: the two middle values of an even count must not wrap when added.
    assert _median(np.array([200, 250], np.uint8)) == 225.0


@pytest.mark.parametrize(
    ("size", "fmt", "small"),
    [
        ((28, 28), "PNG", True),
        ((64, 64), "PNG", True),
        ((65, 64), "PNG", False),
        ((28, 28), "JPEG", True),
        ((200, 30), "JPEG", False),
    ],
)
def test_small_images_are_recognised_from_their_header(
    size: tuple[int, int], fmt: str, small: bool
) -> None:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, fmt)
    assert _small([buffer.getvalue()]) is small
    assert not _small([buffer.getvalue()] * 2)  # only single images are decoded inline
