"""Held-out photo kinds rendered from real MNIST digits the way users produce them: ink on paper
under uneven light, JPEG'd, turned, blurred, small in a phone's 12 MP frame, a dim sheet on a dark
desk, a blue pen, ruled and squared paper, white on black, a marker, a drawing app's screenshot.

Each kind is ``render(digit, rng) -> bytes`` (an encoded image); the same seed gives the same
bytes. ``KINDS`` names them all.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tests.api.test_preprocess_scenes import _pen

Render = Callable[[np.ndarray, np.random.Generator], bytes]

_PAPER = np.array([236.0, 232.0, 222.0])
_INK = np.array([28.0, 28.0, 36.0])


def encode(pixels: np.ndarray, fmt: str = "JPEG", quality: int = 85) -> bytes:
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def strokes(digit: np.ndarray, side: int, bold: int = 1) -> np.ndarray:
    """The digit's ink, 0 to 1, ``side`` pixels square; ``bold`` > 1 thickens the strokes by a
    max filter of that size at 28 pixels (a marker)."""
    image = Image.fromarray(digit)
    if bold > 1:
        image = image.filter(ImageFilter.MaxFilter(bold))
    ink: np.ndarray = np.asarray(image.resize((side, side), Image.Resampling.BICUBIC)) / 255.0
    return ink


def _light(shape: tuple[int, int], rng: np.random.Generator, low: float) -> np.ndarray:
    """A lighting gradient in a random direction, from ``low`` to 1."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-9)
    light: np.ndarray = low + (1 - low) * ramp
    return light


def _page(
    digit: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int] = (480, 360),
    side: int = 180,
    ink: np.ndarray = _INK,
    bold: int = 1,
    paper: np.ndarray | None = None,
) -> np.ndarray:
    """An RGB page (float) of ``size`` (width, height) with the digit ``side`` pixels tall in
    ``ink`` at a random place; ``paper``: the page before the ink (default plain paper)."""
    width, height = size
    page = np.broadcast_to(_PAPER, (height, width, 3)).copy() if paper is None else paper
    alpha = strokes(digit, side, bold)[..., None] * 0.92
    top = int(rng.integers(10, height - side - 10))
    left = int(rng.integers(10, width - side - 10))
    spot = page[top : top + side, left : left + side]
    page[top : top + side, left : left + side] = spot * (1 - alpha) + ink * alpha
    return page


def _noisy(page: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return page + rng.normal(0, sigma, page.shape[:2])[..., None]


def mnist_png(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The 28x28 MNIST digit itself, as a PNG (the baseline)."""
    return encode(digit, "PNG")


def paper(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on paper, evenly lit, a JPEG."""
    return encode(_noisy(_page(digit, rng), rng, 2))


def gradient(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on paper under a strong lighting gradient (half as bright at one side), noise."""
    page = _page(digit, rng) * _light((360, 480), rng, 0.5)[..., None]
    return encode(_noisy(page, rng, 4))


def jpeg_low(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ink on paper, JPEG quality 15 (a messaging app's recompression)."""
    return encode(_noisy(_page(digit, rng), rng, 3), quality=15)


def rotated(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The page turned by up to 10 degrees either way."""
    page = Image.fromarray(np.clip(_page(digit, rng), 0, 255).astype(np.uint8))
    angle = float(rng.uniform(-10, 10))
    fill = tuple(int(v) for v in _PAPER)
    turned = page.rotate(angle, Image.Resampling.BICUBIC, fillcolor=fill)
    return encode(_noisy(np.asarray(turned, np.float64), rng, 2))


def blurred(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Out of focus: a Gaussian blur of 3 pixels on a digit 180 pixels tall."""
    page = Image.fromarray(np.clip(_page(digit, rng), 0, 255).astype(np.uint8))
    soft = np.asarray(page.filter(ImageFilter.GaussianBlur(3)), np.float64)
    return encode(_noisy(soft, rng, 2))


def blue_pen(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A blue ballpoint on white paper."""
    ink = np.array([40.0, 70.0, 190.0])
    return encode(_noisy(_page(digit, rng, ink=ink), rng, 2))


def lined(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Ruled paper: light blue lines every 28 pixels, a red margin; the digit across them."""
    page = np.broadcast_to(_PAPER, (360, 480, 3)).copy()
    for row in range(int(rng.integers(5, 28)), 360, 28):
        page[row : row + 2] = (150, 175, 225)
    page[:, 60:62] = (220, 120, 120)
    return encode(_noisy(_page(digit, rng, paper=page), rng, 2))


def squared(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Squared paper: a grey-blue grid every 20 pixels."""
    page = np.broadcast_to(_PAPER, (360, 480, 3)).copy()
    offset = int(rng.integers(0, 20))
    page[offset::20] = (170, 190, 215)
    page[:, offset::20] = (170, 190, 215)
    return encode(_noisy(_page(digit, rng, paper=page), rng, 2))


def inverted(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """White on black, as MNIST, but larger, off centre, noisy, a JPEG."""
    board = np.full((300, 300, 3), 12.0)
    chalk = np.array([245.0, 245.0, 245.0])
    return encode(_noisy(_page(digit, rng, (300, 300), 160, chalk, paper=board), rng, 3))


def marker(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A thick marker: strokes about twice MNIST's width."""
    return encode(_noisy(_page(digit, rng, bold=3), rng, 2))


def screenshot(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A phone drawing app's screenshot (PNG, 540x960): a dark status bar with the clock, a grey
    toolbar with icons, the white canvas with a black brush digit, a palette along the bottom."""
    screen = np.full((960, 540, 3), 255.0)
    screen[:40] = 30
    screen[12:28, 20:70] = 240
    screen[14:26, 470:510] = 240
    screen[40:110] = 235
    for x in range(30, 520, 80):
        screen[55:95, x : x + 40] = 90
    screen[860:] = 240
    colours = [(0, 0, 0), (220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 40)]
    image = Image.fromarray(screen.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for index, colour in enumerate(colours):
        x = 50 + 100 * index
        draw.ellipse((x, 880, x + 50, 930), fill=colour)
    page = np.asarray(image, np.float64).copy()
    canvas = page[110:860]
    alpha = strokes(digit, 360)[..., None]
    top, left = int(rng.integers(40, 340)), int(rng.integers(20, 160))
    spot = canvas[top : top + 360, left : left + 360]
    canvas[top : top + 360, left : left + 360] = spot * (1 - alpha)
    return encode(page, "PNG")


def small_in_big(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 12 MP phone photo (4000x3000 JPEG) of a page with the digit 150 pixels tall anywhere off
    centre, in a felt pen (strokes about 18 pixels wide): paper grain, sensor noise, a shadow's
    gradient across the frame."""
    return _big_photo(felt_pen(digit), rng)


def small_pen(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """:func:`small_in_big` with a ballpoint pen's line, 6 pixels wide."""
    return _big_photo(ballpoint(digit), rng)


def felt_pen(digit: np.ndarray) -> np.ndarray:
    return strokes(digit, 150)


def ballpoint(digit: np.ndarray) -> np.ndarray:
    return _pen(digit, 150, 6)


def clean_page(ink: np.ndarray) -> bytes:
    """The same ink (0 to 1) on a clean, evenly lit 480x360 page, as a PNG: what a small digit
    in a big photo should reach the model as."""
    page = np.full((360, 480), 236.0)
    side = ink.shape[0]
    page[100 : 100 + side, 160 : 160 + side] = 236 * (1 - 0.9 * ink) + 30 * 0.9 * ink
    return encode(page, "PNG")


def _big_photo(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    height, width = 3000, 4000
    # Paper texture: smooth blotches (upscaled noise) and fine grain, made at a quarter size.
    coarse = Image.fromarray((rng.normal(128, 40, (30, 40))).clip(0, 255).astype(np.uint8))
    blotch = np.asarray(coarse.resize((width // 4, height // 4), Image.Resampling.BICUBIC), float)
    grain = rng.normal(0, 5, (height // 4, width // 4))
    texture = Image.fromarray(np.clip(224 + (blotch - 128) * 0.1 + grain, 0, 255).astype(np.uint8))
    page = np.asarray(texture.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    side = ink.shape[0]
    top = int(rng.integers(200, height - side - 200))
    left = int(rng.integers(200, width - side - 200))
    while abs(top + side / 2 - height / 2) < 300 and abs(left + side / 2 - width / 2) < 400:
        left = int(rng.integers(200, width - side - 200))  # off centre
    alpha = ink.astype(np.float32) * 0.9
    spot = page[top : top + side, left : left + side]
    page[top : top + side, left : left + side] = spot * (1 - alpha) + 30 * alpha
    page *= (
        _light((height // 8, width // 8), rng, 0.55).repeat(8, 0).repeat(8, 1).astype(np.float32)
    )
    page += rng.normal(0, 3, (height, width)).astype(np.float32)
    rgb = np.clip(page, 0, 255).astype(np.uint8)[..., None] * np.array([1, 1, 1], np.uint8)
    return encode(rgb, quality=90)


def dim_desk(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A dim photo (1200x900 JPEG) of a sheet on a dark desk: the desk at grey 35 to 55, the sheet
    only 25 to 45 levels brighter, turned up to 15 degrees, filling half the frame; the digit in
    dark ink on it, 240 pixels tall; a lighting gradient and noise."""
    height, width = 900, 1200
    _, xs = np.mgrid[0:height, 0:width]
    desk_level = rng.uniform(35, 55)
    desk = desk_level + 6 * np.sin(xs / 11.0) + rng.normal(0, 3, xs.shape)
    sheet_level = desk_level + rng.uniform(25, 45)
    half_w, half_h = rng.uniform(330, 420), rng.uniform(260, 330)
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
    turn = np.deg2rad(rng.uniform(-15, 15))
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    centre = np.array([600 + rng.uniform(-80, 80), 450 + rng.uniform(-50, 50)])
    corners = corners @ rotation.T + centre
    outline = Image.new("L", (width, height))
    ImageDraw.Draw(outline).polygon([(float(x), float(y)) for x, y in corners], fill=255)
    sheet = np.asarray(outline.filter(ImageFilter.GaussianBlur(1.5))) / 255.0
    photo = desk * (1 - sheet) + (sheet_level + rng.normal(0, 2, xs.shape)) * sheet
    side = 240
    alpha = strokes(digit, side) * 0.9
    top = int(centre[1] - side / 2 + rng.uniform(-40, 40))
    left = int(centre[0] - side / 2 + rng.uniform(-60, 60))
    ink = desk_level * rng.uniform(0.4, 0.7)
    spot = photo[top : top + side, left : left + side]
    photo[top : top + side, left : left + side] = spot * (1 - alpha) + ink * alpha
    photo = photo * _light((height, width), rng, 0.8)
    rgb = np.repeat(photo[..., None], 3, axis=2) * np.array([1.0, 0.97, 0.9])
    return encode(rgb, quality=85)


# The kinds of a small digit in a 12 MP photo, with their ink.
BIG_INKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "small_in_big": felt_pen,
    "small_pen": ballpoint,
}
KINDS: dict[str, Render] = {
    "mnist_png": mnist_png,
    "paper": paper,
    "gradient": gradient,
    "jpeg_low": jpeg_low,
    "rotated": rotated,
    "blurred": blurred,
    "blue_pen": blue_pen,
    "lined": lined,
    "squared": squared,
    "inverted": inverted,
    "marker": marker,
    "screenshot": screenshot,
    "dim_desk": dim_desk,
    "small_in_big": small_in_big,
    "small_pen": small_pen,
}
