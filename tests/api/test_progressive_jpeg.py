"""What makes decoding cost more than an image's pixel count says. Progressive JPEGs: libjpeg
holds 16-bit coefficients of the whole canvas while it decodes one, even at a draft scale, so
their limits count the full canvas (a baseline JPEG's count its draft); each of their scans is a
pass over it. Thin images: reduction rounds up."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from api.errors import ApiError
from api.image_decode import decode_image
from api.image_open import MAX_JPEG_SCANS, decode_cost, open_image
from api.preprocess import decode_size

DIGIT_WORK = decode_size("digit", (28, 28))
PHOTO_WORK = decode_size("photo", (32, 32))


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


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding() -> None:
    data = jpeg(64, 64, progressive=True)
    # Start-of-scan markers in a comment segment count as scans would: the guard counts markers.
    payload = b"\xff\xda" * (MAX_JPEG_SCANS + 1)
    comment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    with pytest.raises(ApiError) as raised:
        open_image(data[:2] + comment + data[2:], DIGIT_WORK)
    assert raised.value.status == 422
    assert f"more than {MAX_JPEG_SCANS} scans" in raised.value.message
    assert open_image(data, DIGIT_WORK).size == (64, 64)


@pytest.mark.parametrize(("width", "height"), [(1, 16_000_000), (16_000_000, 1), (3, 5_000_000)])
def test_thin_images_are_reduced_to_the_work_bound(width: int, height: int) -> None:
    factor = PHOTO_WORK.factor(width, height)
    assert -(-width // factor) * -(-height // factor) <= 1 << 20
