"""Progressive JPEGs: libjpeg holds 16-bit coefficients of the whole canvas while it decodes one,
even at a draft scale, so their limits count the full canvas (a baseline JPEG's count its draft)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from api.errors import ApiError
from api.imaging import decode_cost, decode_image, open_image
from api.preprocess import decode_size

DIGIT_WORK = decode_size("digit", (28, 28))


def jpeg(width: int, height: int, progressive: bool, mode: str = "L") -> bytes:
    image = Image.new(mode, (width, height), "white")
    ImageDraw.Draw(image).line(
        (width // 4, height // 4, width // 2, height), fill="black", width=40
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=50, progressive=progressive)
    return out.getvalue()


def test_a_progressive_canvas_over_the_limit_is_refused_from_its_header() -> None:
    data = jpeg(6000, 3000, progressive=True)
    with pytest.raises(ApiError) as raised:
        open_image(data, DIGIT_WORK, max_pixels=16_000_000)
    assert raised.value.status == 413
    assert "progressive JPEG of 6000x3000" in raised.value.message
    # The same canvas, baseline, decodes at 1/8 scale within the limit.
    baseline = open_image(jpeg(6000, 3000, progressive=False), DIGIT_WORK, 16_000_000)
    assert baseline.size == (750, 375)
    assert decode_cost(baseline) == 750 * 375


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_progressive_jpeg_costs_its_coefficients(mode: str) -> None:
    image = open_image(jpeg(2000, 2000, progressive=True, mode=mode), DIGIT_WORK, 16_000_000)
    layers = len(mode)
    assert image.size == (500, 500)  # still decoded at a draft scale
    assert decode_cost(image) == 500 * 500 + -(-2 * layers * 2000 * 2000 // 3)
    assert decode_image(image, DIGIT_WORK).size == (500, 500)
