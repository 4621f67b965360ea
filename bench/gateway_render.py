"""Render MNIST digits the way users send them: photos of paper, and transparent drawings.

``photo_of_paper``: the digit as dark ink on off-white paper, at a random size and off centre,
seen in perspective, under a lighting gradient with a vignette, slightly blurred, with sensor
noise and JPEG compression. ``transparent_drawing``: the strokes in a dark colour on a fully
transparent canvas (what a canvas drawing app exports), PNG.

    python bench/gateway_render.py OUT_DIR [--count N]   # writes examples to look at
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO_ROOT = Path(__file__).resolve().parents[1]


def _perspective_coefficients(
    source: list[tuple[float, float]], target: list[tuple[float, float]]
) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) mapping output (target) to input (source)."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=np.float64)
    b = np.array([c for point in source for c in point], dtype=np.float64)
    return list(np.linalg.solve(a, b))


def _ink_layer(digit: np.ndarray, side: int) -> Image.Image:
    return Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)


def photo_of_paper(digit: np.ndarray, rng: np.random.Generator, quality: int = 75) -> bytes:
    """A JPEG 'phone photo' of the digit written on paper."""
    height, width = int(rng.integers(220, 360)), int(rng.integers(220, 360))
    side = int(rng.integers(90, min(height, width) - 20))
    ink = Image.new("L", (width, height), 0)
    left = int(rng.integers(0, width - side))
    top = int(rng.integers(0, height - side))
    ink.paste(_ink_layer(digit, side), (left, top))
    # Perspective: move each corner by up to 8% of the frame.
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    jitter = rng.uniform(-0.08, 0.08, size=(4, 2)) * (width, height)
    moved = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(corners, jitter, strict=True)]
    coefficients = _perspective_coefficients(corners, moved)
    ink = ink.transform(
        (width, height), Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BILINEAR
    )
    ink_array = np.asarray(ink.filter(ImageFilter.GaussianBlur(0.8)), np.float64) / 255.0
    # Paper: off-white, a lighting gradient in a random direction and a vignette.
    ys, xs = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height) + 1.0
    light = 0.55 + 0.45 * (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    radius = np.hypot(xs / width - 0.5, ys / height - 0.5)
    light *= 1.0 - 0.35 * radius**2
    paper = np.array([235.0, 228.0, 212.0]) * rng.uniform(0.9, 1.05)
    ink_colour = np.array([30.0, 30.0, 55.0]) * rng.uniform(0.5, 1.5)
    strength = rng.uniform(0.75, 0.95)
    alpha = (ink_array * strength)[..., None]
    pixels = (paper * (1 - alpha) + ink_colour * alpha) * light[..., None]
    pixels += rng.normal(0, 5.0, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def transparent_drawing(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A PNG with dark strokes on a transparent canvas, off centre."""
    canvas = int(rng.integers(180, 320))
    side = int(rng.integers(80, canvas - 10))
    alpha = Image.new("L", (canvas, canvas), 0)
    alpha.paste(_ink_layer(digit, side), tuple(int(v) for v in rng.integers(0, canvas - side, 2)))
    colour = tuple(int(c) for c in rng.integers(0, 80, 3))
    rgba = Image.new("RGBA", (canvas, canvas), (*colour, 0))
    rgba.putalpha(alpha)
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    return buffer.getvalue()


def main() -> int:
    sys.path.insert(0, str(REPO_ROOT))
    from harness.mnist import mnist_test_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    digits, labels = mnist_test_digits(args.data_dir, args.count)
    rng = np.random.default_rng(0)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (digit, label) in enumerate(zip(digits, labels, strict=True)):
        (args.out / f"{i:03d}_{label}_photo.jpg").write_bytes(photo_of_paper(digit, rng))
        (args.out / f"{i:03d}_{label}_drawing.png").write_bytes(transparent_drawing(digit, rng))
    print(f"wrote {2 * args.count} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
