"""The digit profile on held-out photo scenes that a hunt found misread, built from real MNIST
digits (no servers needed): a soft shadow across the page, an underexposed photo of grey paper,
a drawing app's screenshot with a dark status bar, a white pen on a grey card. Each must reach
the model as the same digit on clean white paper does: the 28x28 images are compared (both
blurred by a pixel), not a trained model's answers."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from api.decoding import prepare_batch
from tests.api.test_preprocess_scenes import SPEC, _blurred, _correlation
from tests.api.test_preprocess_scenes import digits as digits  # the fixture

_SIZE = (400, 300)  # width, height


def _page(
    digit: np.ndarray, paper: float = 235.0, ink: float = 25.0, gradient: float = 0.0
) -> np.ndarray:
    """The digit 180 pixels tall in ``ink`` on ``paper``, lit ``gradient`` darker to one side."""
    width, height = _SIZE
    strokes = np.asarray(Image.fromarray(digit).resize((180, 180), Image.Resampling.BICUBIC))
    page = np.full((height, width), float(paper))
    alpha = strokes / 255.0
    page[70:250, 130:310] = page[70:250, 130:310] * (1 - alpha) + ink * alpha
    page *= 1 - gradient * np.linspace(0.0, 1.0, width)[None, :]
    return page


def _jpeg(page: np.ndarray, blur: float = 0.0) -> bytes:
    image = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB")
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _agreement(blobs: list[bytes], digits: np.ndarray) -> np.ndarray:
    """Per digit, how well the model's 28x28 input for the scene agrees with the one for the
    same digit on clean white paper."""
    clean = prepare_batch([_jpeg(_page(d)) for d in digits], SPEC, "digit", 10**8, "test")
    seen = prepare_batch(blobs, SPEC, "digit", 10**8, "test")
    pairs = zip(seen[..., 0], clean[..., 0], strict=True)
    return np.array([_correlation(_blurred(s), _blurred(c)) for s, c in pairs])


def _shadowed(digit: np.ndarray) -> bytes:
    """A soft shadow (45% darker) over the top left of the page: its edge, 45 pixels wide, runs
    across the paper above and beside the digit."""
    height, width = _SIZE[1], _SIZE[0]
    yy, xx = np.mgrid[0:height, 0:width]
    reach = np.hypot(xx - 60.0, yy + 60.0)
    shade = np.clip((0.6 * height - reach) / (0.15 * height), 0, 1)
    return _jpeg(_page(digit) * (1 - 0.45 * shade))


def test_a_shadow_across_the_page_is_no_ink(digits: np.ndarray) -> None:
    """The paper was estimated by a max filter then a blur, which spread the lit paper into the
    shadow: its edge read as ink and the box took it in (median agreement 0.50, the worst 0.06);
    a closing keeps the shadow's edge where it is (1.00, the worst 1.00)."""
    scores = _agreement([_shadowed(d) for d in digits], digits)
    assert np.median(scores) > 0.95, scores
    assert scores.min() > 0.8, scores


def test_dim_grey_paper_is_paper(digits: np.ndarray) -> None:
    """An underexposed photo: paper at grey 120, 15% darker to one side, black ink. The border's
    median (at most 127) made the paper a dark background with light ink (median agreement 0.68,
    the worst 0.19); the ink is the tail farther from the paper, dark here (1.00, 0.98)."""
    blobs = [_jpeg(_page(d, paper=120, ink=15, gradient=0.15), blur=1.0) for d in digits]
    scores = _agreement(blobs, digits)
    assert np.median(scores) > 0.95, scores
    assert scores.min() > 0.8, scores


def test_white_pen_on_a_grey_card_is_the_ink(digits: np.ndarray) -> None:
    """A white pen on a card at grey 150: the border above 127 made the card paper and the pen
    a hole in it (median agreement 0.67, the worst 0.57); the ink is the tail farther from the
    card, light here (1.00, 0.96)."""
    scores = _agreement([_jpeg(_page(d, paper=150, ink=250)) for d in digits], digits)
    assert np.median(scores) > 0.95, scores
    assert scores.min() > 0.8, scores


def test_a_dark_status_bar_is_no_part_of_the_digit(digits: np.ndarray) -> None:
    """A drawing app's screenshot: a dark bar 48 pixels tall along the top, with light text in
    it. The bar's edge is a line of ink across the frame, which the box stretched to reach
    (median agreement 0.27); a bar near the frame's edge with the digit wholly beyond it is left
    out (1.00)."""
    blobs = []
    for d in digits:
        page = _page(d)
        page[:48] = 28
        page[16:30, 20:50] = 255  # the clock
        page[18:28, 340:370] = 255  # the battery
        blobs.append(_jpeg(page))
    scores = _agreement(blobs, digits)
    assert np.median(scores) > 0.95, scores
    assert scores.min() > 0.8, scores
