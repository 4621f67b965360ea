"""Image variants that took a wrong path through decoding, against a real gateway: MPO files (a
JPEG whose MPF segment lists more images: phone cameras' gain maps and dual images), PNG and
WebP EXIF that is no TIFF structure, float TIFFs of 0-1 intensities, and PNG metadata chunks
that inflate past Pillow's 1 MiB per chunk."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from api.image_open import MAX_JPEG_SCANS, decode_cost, open_image
from api.preprocess import decode_size
from harness.gateway import Gateway
from harness.mnist import mnist_test_digits, png_bytes
from tests.api.image_posts import classify, encode

MB = 1024 * 1024


def jpeg_and_mpo(image: Image.Image, **params: object) -> tuple[bytes, bytes]:
    """The same pixels as a JPEG and as an MPO whose second image is an 8x8 black one."""
    second = Image.new(image.mode, (8, 8))
    mpo = encode(image, "MPO", save_all=True, append_images=[second], **params)
    return encode(image, "JPEG", **params), mpo


def with_scans(data: bytes, copies: int) -> bytes:
    """The (first) image's last scan, an AC refinement, repeated: valid, a pass more each."""
    end = data.index(b"\xff\xd9")
    last = data.rfind(b"\xff\xda", 0, end)
    return data[:end] + data[last:end] * copies + data[end:]


def paper_digit(digit: np.ndarray, canvas: tuple[int, int], side: int) -> Image.Image:
    """An MNIST digit, dark on white, ``side`` pixels high on a larger canvas."""
    paper = Image.new("L", canvas, 255)
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
    paper.paste(ink, ((canvas[0] - side) // 2, (canvas[1] - side) // 2))
    return paper.convert("RGB")


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    assert response.status_code >= 400, response.text
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_an_mpo_photo_decodes_as_its_jpeg_at_a_draft_scale(
    gateway: Gateway, data_dir: Path
) -> None:
    """6000x4000 is over the 16 M pixel limit, but a baseline JPEG decodes at 1/8 scale: so must
    its MPO (it got 413), and the primary image is what is decoded, not the second."""
    digits, _ = mnist_test_digits(data_dir, 1, offset=7)
    jpeg, mpo = jpeg_and_mpo(paper_digit(digits[0], (6000, 4000), 3000), quality=50)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    response = classify(gateway, jpeg, mpo)
    assert response.status_code == 200, response.text
    as_jpeg, as_mpo = response.json()["predictions"]
    assert as_mpo == as_jpeg


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("progressive 6000x4000", 413, "progressive JPEG of 6000x4000"),
        ("too many scans", 422, f"more than {MAX_JPEG_SCANS} scans"),
    ],
)
def test_an_mpo_meets_the_jpeg_guards(gateway: Gateway, case: str, status: int, words: str) -> None:
    """A progressive canvas counts whole, and scans are counted, before anything is decoded.
    Before, an MPO skipped both: a 3000x3000 one with 20,000 scans held a core for 172 s."""
    if case == "too many scans":
        image = Image.new("RGB", (256, 256), "white")
        jpeg, mpo = (with_scans(d, MAX_JPEG_SCANS) for d in jpeg_and_mpo(image, progressive=True))
    else:
        jpeg, mpo = jpeg_and_mpo(Image.new("RGB", (6000, 4000), "white"), progressive=True)
    as_jpeg = error_of(classify(gateway, jpeg))
    start = time.monotonic()
    as_mpo = error_of(classify(gateway, mpo))
    elapsed = time.monotonic() - start
    assert as_mpo == as_jpeg
    assert as_mpo[0] == status and words in as_mpo[2], as_mpo
    assert elapsed < 5, f"{elapsed:.1f} s to refuse it"


def test_a_progressive_mpo_costs_its_coefficients() -> None:
    """The decode budget holds a progressive JPEG's full-canvas coefficients: an MPO's too."""
    work = decode_size("digit", (28, 28))
    jpeg, mpo = jpeg_and_mpo(Image.new("RGB", (2000, 2000), "white"), progressive=True)
    opened = open_image(mpo, work)
    assert opened.size == (500, 500)
    assert decode_cost(opened) == decode_cost(open_image(jpeg, work)) > 2000 * 2000


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"], ids=["png", "webp"])
def test_unreadable_exif_means_no_orientation(gateway: Gateway, data_dir: Path, fmt: str) -> None:
    """An eXIf chunk that is no TIFF structure made the image 422; a JPEG's was ignored."""
    digits, _ = mnist_test_digits(data_dir, 2, offset=30)
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    plain = [encode(Image.fromarray(d), fmt, **params) for d in digits]
    garbled = [encode(Image.fromarray(d), fmt, exif=b"\xff" * 100, **params) for d in digits]
    response = classify(gateway, *plain, *garbled)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[2:] == predictions[:2]


def test_a_float_tiff_of_intensities_reads_as_its_png(gateway: Gateway, data_dir: Path) -> None:
    """Float pixels within [0, 1] are 0-1 intensities (they decoded all black: every score 0.1);
    float pixels of 0-255 read as before."""
    digits, _ = mnist_test_digits(data_dir, 3, offset=40)
    pngs = [png_bytes(d) for d in digits]
    unit = [encode(Image.fromarray(d.astype(np.float32) / 255), "TIFF") for d in digits]
    wide = encode(Image.fromarray(digits[0].astype(np.float32)), "TIFF")
    assert Image.open(io.BytesIO(unit[0])).mode == "F"
    response = classify(gateway, *pngs, *unit, wide)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[3:6] == predictions[:3]
    assert predictions[6] == predictions[0]
    assert len({p["class_id"] for p in predictions[:3]}) > 1, "the digits read alike"


def png_with_chunks(image: bytes, kind: bytes, count: int, inflated: int) -> bytes:
    """``image`` (a PNG) with ``count`` compressed ``kind`` chunks (iCCP, zTXt, iTXt), each
    inflating to ``inflated`` bytes of zeros (about 1000:1)."""
    head = {b"iCCP": b"profile\0\0", b"zTXt": b"comment\0\0", b"iTXt": b"comment\0\1\0\0\0"}
    data = head[kind] + zlib.compress(bytes(inflated), 9)
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return image[:33] + chunk * count + image[33:]  # after the signature and IHDR


@pytest.mark.parametrize("kind", [b"iCCP", b"zTXt", b"iTXt"], ids=lambda kind: kind.decode())
def test_png_metadata_over_a_mebibyte_is_skipped(
    gateway: Gateway, data_dir: Path, kind: bytes
) -> None:
    """A compressed chunk that inflates past 1 MiB (Pillow's limit per chunk) is skipped, as the
    chunks past the 1 MiB bound per image are: it refused good pixels (422). It costs at most
    1 MiB of inflating, and the chunks after it none: 4,000 of them are answered at once."""
    digits, _ = mnist_test_digits(data_dir, 1, offset=50)
    plain = png_bytes(digits[0])
    one = png_with_chunks(plain, kind, 1, 2 * MB)
    many = png_with_chunks(plain, kind, 4000, 2 * MB)
    assert len(many) < 9 * MB
    start = time.monotonic()
    response = classify(gateway, plain, one, many)
    elapsed = time.monotonic() - start
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions[1] == predictions[0] and predictions[2] == predictions[0]
    # Inflated in full, 4,000 chunks are 8 GB of zeros: many seconds, even on a fast machine.
    assert elapsed < 3, f"{elapsed:.1f} s"
