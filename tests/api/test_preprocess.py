"""The digit and photo profiles on rendered real MNIST digits (no servers needed)."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.imaging import decode_image
from api.preprocess import digit_to_mnist, photo_to_array
from tests.support.mnist import mnist_test_digits
from tests.support.procs import REPO_ROOT


def _renderer():  # noqa: ANN202 - the bench module
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
    for digit in digits:
        restored = digit_to_mnist(decode_image(render(digit, rng)))
        assert restored.shape == (28, 28) and restored.dtype == np.uint8
        # MNIST form: ink fits 20x20, centre of mass near the centre, black border.
        rows = np.flatnonzero(restored.max(axis=1) > 0)
        cols = np.flatnonzero(restored.max(axis=0) > 0)
        assert rows[-1] - rows[0] < 21 and cols[-1] - cols[0] < 21
        ys, xs = np.indices(restored.shape)
        mass = restored.astype(np.float64) / restored.sum()
        assert abs((ys * mass).sum() - 13.5) < 1.5 and abs((xs * mass).sum() - 13.5) < 1.5
        scores.append(_correlation(restored, digit))
    assert np.median(scores) > 0.75, scores
    assert min(scores) > 0.4, scores


def test_uneven_lighting_does_not_become_ink() -> None:
    """A blank sheet under a strong gradient and noise has no digit in it."""
    ys, xs = np.mgrid[0:300, 0:400]
    light = 0.5 + 0.5 * xs / 400
    page = 235 * light + np.random.default_rng(0).normal(0, 5, light.shape)
    page[100:200, 180:195] *= 0.2  # one dark stroke
    restored = digit_to_mnist(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)))
    cols = np.flatnonzero(restored.max(axis=0) > 0)
    assert cols[-1] - cols[0] <= 6, "the gradient was taken for ink"


def test_photo_profile_and_draft_decoding() -> None:
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize(
        (4000, 3000)
    )
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=80)
    decoded = decode_image(buffer.getvalue(), target_size=(224, 224))
    assert decoded.size == (500, 375)  # decoded at 1/8 scale, still covering 224x224
    array = photo_to_array(decoded, (224, 224))
    assert array.shape == (224, 224, 3) and array.dtype == np.uint8
    wide = photo_to_array(Image.new("RGB", (300, 100), (255, 0, 0)), (32, 32))
    assert wide.shape == (32, 32, 3) and (wide == (255, 0, 0)).all()
