"""Structural caps on image metadata (api/image_structure.py), against a real gateway: files whose
metadata Pillow walks in Python one entry at a time (TIFF strip offsets and tag values, GIF
sub-blocks, JPEG segments, PNG chunks, EXIF directories) are refused at once with 422
corrupt_image, saying what was over which limit; an RLE BMP over its pixel limit with 413. Before,
a 2 MB TIFF of a million strip offsets took 11 s and 250 MB, a 9.8 MB GIF of comment sub-blocks
420 MB, a JPEG of empty APP5 segments 7 s, a PNG of empty private chunks 5.6 s, a 16 KB RLE BMP
4.5 s. Legitimate files, camera-like metadata and the real data sets included, still classify."""

from __future__ import annotations

import gzip
import struct
import tarfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

from api.classification import _small
from api.image_open import open_image
from harness.gateway import Gateway
from harness.mnist import mnist_test_digits, png_bytes
from tests.api.image_posts import classify, encode

MANY = 100_000  # entries in a hostile file: over every cap, small enough to build and send fast


def digit() -> Image.Image:
    """A 28x28 stroke, dark on light (what the digits model reads)."""
    image = Image.new("L", (28, 28), 255)
    image.paste(0, (12, 4, 16, 24))
    return image


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tail_at(entries: int) -> int:
    """Where the data after a directory of ``entries`` entries starts (see :func:`tiff`)."""
    return 8 + 2 + 12 * entries + 4


def tiff(entries: list[tuple[int, int, int, int]], tail: bytes = b"") -> bytes:
    """A little-endian TIFF of one directory of (tag, type, count, value): a single SHORT or
    LONG is the value itself, anything larger the offset of its data; ``tail`` follows the
    directory, at :func:`tail_at`."""
    fields = b""
    for tag, kind, count, value in sorted(entries):
        inline = (
            struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        )
        fields += struct.pack("<HHI", tag, kind, count) + inline
    return b"II*\0" + struct.pack("<IH", 8, len(entries)) + fields + b"\0\0\0\0" + tail


def grey_tiff(
    width: int, height: int, layout: list[tuple[int, int, int, int]], tail: bytes
) -> bytes:
    """An 8-bit grey uncompressed TIFF; ``layout``: its strip or tile entries (6 more precede)."""
    grey = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1)]
    return tiff([*grey, (262, 3, 1, 1), (277, 3, 1, 1), *layout], tail)


def exif_blob(count: int) -> bytes:
    """EXIF whose first directory holds its Orientation as ``count`` SHORT values of 1."""
    return tiff([(274, 3, count, tail_at(1) if count > 1 else 1)], b"\1\0" * count * (count > 1))


def tiff_strip_offsets(count: int) -> bytes:
    """A 28x28 grey TIFF of one-row strips listing ``count`` offsets, all of its first row."""
    pixels = tail_at(9) + 4 * count
    layout = [(273, 4, count, tail_at(9)), (278, 3, 1, 1), (279, 4, 1, 28)]
    return grey_tiff(28, 28, layout, struct.pack("<I", pixels) * count + bytes(28))


def tiff_tag_values(count: int) -> bytes:
    """A 28x28 grey TIFF with a private tag of ``count`` SHORT values."""
    at = tail_at(10)
    layout = [
        (273, 4, 1, at + 2 * count),
        (278, 3, 1, 28),
        (279, 4, 1, 784),
        (0x9000, 3, count, at),
    ]
    return grey_tiff(28, 28, layout, b"\1\0" * count + bytes(784))


def tiled_tiff() -> bytes:
    """A 40x40 grey TIFF in nine 16x16 tiles."""
    at = tail_at(10)
    layout = [(322, 3, 1, 16), (323, 3, 1, 16), (324, 4, 9, at), (325, 4, 9, at + 36)]
    table = b"".join(struct.pack("<I", at + 72 + 256 * i) for i in range(9))
    pixels = b"".join(bytes([255 - 25 * i]) * 256 for i in range(9))
    return grey_tiff(40, 40, layout, table + struct.pack("<I", 256) * 9 + pixels)


def gif_with(before_image: bytes) -> bytes:
    """A 28x28 GIF with ``before_image`` inserted just before its image descriptor."""
    gif = encode(digit(), "GIF")
    start = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    at = gif.index(b",", start)
    return gif[:at] + before_image + gif[at:]


def jpeg_with(segments: bytes, image: Image.Image | None = None, **params: object) -> bytes:
    jpeg = encode(image or digit(), "JPEG", **params)
    return jpeg[:2] + segments + jpeg[2:]


def png_with(before: bytes = b"", after: bytes = b"", image: Image.Image | None = None) -> bytes:
    png = encode(image or digit(), "PNG")
    end = png.rindex(b"IEND") - 4
    return png[:33] + before + png[33:end] + after + png[end:]


def jpeg_exif_segments(blob: bytes) -> bytes:
    """``blob`` as EXIF over as many APP1 segments as it takes (Pillow joins them)."""
    parts = [blob[i : i + 65_000] for i in range(0, len(blob), 65_000)]
    return b"".join(b"\xff\xe1" + struct.pack(">H", len(p) + 8) + b"Exif\0\0" + p for p in parts)


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "tiff strip offsets": (
        lambda: tiff_strip_offsets(MANY),
        "the TIFF has 100,000 strip offsets; its 28 rows need at most 28",
    ),
    "tiff tag values": (
        lambda: tiff_tag_values(300_000),
        "the TIFF's first directory has more than 262,144 numeric values (tag 36864",
    ),
    "gif comment sub-blocks": (
        lambda: gif_with(b"!\xfe" + b"\x01x" * 3 * MANY + b"\0"),
        "the GIF has more than 262,144 sub-blocks and stray bytes before its image",
    ),
    "gif stray bytes": (lambda: gif_with(b"x" * 3 * MANY), "more than 262,144 sub-blocks"),
    "jpeg empty APP5": (
        lambda: jpeg_with(b"\xff\xe5\0\2" * MANY),
        "the JPEG has more than 1,024 segments before its scan",
    ),
    "jpeg empty COM": (lambda: jpeg_with(b"\xff\xfe\0\2" * MANY), "more than 1,024 segments"),
    "jpeg fill bytes": (
        lambda: jpeg_with(b"\xff" * MANY),
        "the JPEG has more than 16,384 fill or stray bytes between segments",
    ),
    "jpeg exif": (
        lambda: jpeg_with(jpeg_exif_segments(exif_blob(300_000))),
        "the EXIF's first directory has more than 262,144 numeric values (tag 274",
    ),
    "png private chunks": (
        lambda: png_with(chunk(b"prVt", b"") * MANY),
        "the PNG has more than 16,384 chunks",
    ),
    "png text chunks": (
        lambda: png_with(chunk(b"tEXt", b"k\0v") * MANY),
        "more than 16,384 chunks",
    ),
    "png empty IDAT": (
        lambda: png_with(after=chunk(b"IDAT", b"") * MANY),
        "the PNG has more than 16,384 chunks",
    ),
    "png exif entries": (
        lambda: png_with(after=chunk(b"eXIf", tiff([(1000 + i, 3, 1, 0) for i in range(5000)]))),
        "the EXIF's first directory has 5,000 entries; the limit is 4,096",
    ),
    "webp exif": (
        lambda: encode(digit().convert("RGB"), "WEBP", exif=b"Exif\0\0" + exif_blob(300_000)),
        "the EXIF's first directory has more than 262,144 numeric values",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_metadata_is_refused_at_once(gateway: Gateway, name: str) -> None:
    build, words = HOSTILE[name]
    data = build()
    start = time.monotonic()
    response = classify(gateway, data)
    elapsed = time.monotonic() - start
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "corrupt_image" and words in error["message"], error
    assert elapsed < 2, f"{elapsed:.1f} s to refuse {len(data):,} bytes"


def bmp_rle8(width: int, height: int, rows: bytes) -> bytes:
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 0, 0, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + header + palette + rows


def test_a_large_rle_bmp_is_refused_and_a_small_one_decodes(gateway: Gateway) -> None:
    """Pillow decodes RLE in Python, padding each row to its end a byte at a time: a 16 KB
    RLE8 file of 4000x4000 pixels (each row one pixel, then end of line) took 4.5 s."""
    large = bmp_rle8(4000, 4000, b"\x01\x07\0\0" * 4000 + b"\0\1")
    start = time.monotonic()
    response = classify(gateway, large)
    elapsed = time.monotonic() - start
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (
        error["code"] == "image_too_large" and "RLE-compressed BMP of 4000x4000" in error["message"]
    )
    assert elapsed < 2, f"{elapsed:.1f} s"
    rows = b"".join(b"\x0c\xff\x04\0\x0c\xff\0\0" for _ in range(28))  # a dark bar on white
    assert classify(gateway, bmp_rle8(28, 28, rows + b"\0\1")).status_code == 200


def icc_profile(size: int) -> bytes:
    """An sRGB profile padded to ``size`` bytes (over 64 KB: split over several APP2 segments)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile + bytes(max(0, size - len(profile)))


def camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif.update({271: "Canon", 272: "Canon EOS 5D", 274: 1, 282: 300.0, 283: 300.0, 296: 2})
    exif.get_ifd(ExifTags.IFD.Exif).update({33434: 1 / 125, 33437: 4.0, 34855: 400, 36867: "2024"})
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({1: "N", 2: (51.0, 30.0, 12.5), 3: "W"})
    return exif


def photoshop_segment() -> bytes:
    """APP13: IPTC and resolution resource blocks, as Photoshop writes them."""
    iptc = b"\x1c\x02\x78\0\x05digit"
    blocks = b"8BIM\x04\x04\0\0" + struct.pack(">I", len(iptc)) + iptc + b"\0"
    blocks += b"8BIM\x03\xed\0\0" + struct.pack(">I", 16) + bytes(16)
    payload = b"Photoshop 3.0\0" + blocks
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def legitimate() -> dict[str, bytes]:
    photo = digit().resize((640, 480)).convert("RGB")
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>1</tiff:Orientation></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    for key in ("Title", "Author", "Software"):
        info.add_text(key, "a digit")
    info.add_text("Comment", "z" * 2000, zip=True)
    info.add_itxt("Description", "ein Strich", lang="de")
    frames = [digit(), digit().rotate(30, fillcolor=255), digit().rotate(-30, fillcolor=255)]
    return {
        "camera jpeg": jpeg_with(
            photoshop_segment(),
            photo,
            exif=camera_exif(),
            icc_profile=icc_profile(150_000),
            xmp=xmp,
            comment=b"taken on a desk",
            quality=90,
        ),
        "png with text and icc": encode(
            digit(),
            "PNG",
            pnginfo=info,
            icc_profile=icc_profile(4000),
            exif=camera_exif(),
            dpi=(300, 300),
        ),
        "multi-strip tiff": encode(
            digit().resize((280, 280)).convert("RGB"), "TIFF", tiffinfo={278: 1}
        ),
        "lzw tiff": encode(
            digit().resize((280, 280)), "TIFF", compression="tiff_lzw", strip_size=2048
        ),
        "tiled tiff": tiled_tiff(),
        # A scan 50 pixels wide, 16,000 rows tall, a strip per row (tiffcp -r 1 writes such).
        "tall tiff of one-row strips": encode(
            Image.new("L", (50, 16_000), 255), "TIFF", tiffinfo={278: 1}
        ),
        # XMP is stored raw, its bytes read as sub-block lengths, then a "magic trailer" (XMP
        # spec part 3): 2 MB of text (Photoshop's DocumentAncestors) read as ~20,000 sub-blocks.
        "gif with a 2 MB xmp packet": gif_with(
            b"!\xff\x0bXMP DataXMP" + b"a" * 2_000_000 + b"\x01" + bytes(range(255, -1, -1)) + b"\0"
        ),
        "tiff with exif": encode(digit(), "TIFF", exif=camera_exif()),
        "animated gif with comments": encode(
            frames[0],
            "GIF",
            save_all=True,
            append_images=frames[1:],
            loop=0,
            duration=100,
            comment=b"c" * 10_000,
        ),
        "apng": encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100),
        "webp with exif": encode(digit().convert("RGB"), "WEBP", exif=camera_exif(), lossless=True),
    }


LEGITIMATE = legitimate()


@pytest.mark.parametrize("name", list(LEGITIMATE))
def test_legitimate_metadata_still_classifies(gateway: Gateway, name: str) -> None:
    response = classify(gateway, LEGITIMATE[name])
    assert response.status_code == 200, response.text


def test_the_real_data_sets_open(data_dir: Path) -> None:
    """MNIST digits as PNG, CIFAR-10's exact test images as JPEG with camera-like metadata, and
    (where the data folder has it) a sample of the CIFAR-10 JPEG export, through open_image."""
    digits, _ = mnist_test_digits(data_dir, 500)
    for array in digits:
        open_image(png_bytes(array))
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        for array in exact["x_test"][:200]:
            open_image(
                encode(
                    Image.fromarray(array), "JPEG", exif=camera_exif(), icc_profile=icc_profile(600)
                )
            )
    tarball = data_dir / "cifar10" / "cifar10-jpeg.tar.gz"
    if not tarball.is_file():
        pytest.skip(f"{tarball} is absent: the JPEG export's sample is not checked")
    opened = 0
    with gzip.open(tarball) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                open_image(handle.read())
                opened += 1
            if opened == 2000:
                break
    assert opened == 2000


def test_a_small_hostile_file_is_not_opened_on_the_event_loop() -> None:
    """A body of at most 16 KB that declares a tiny image is opened on the event loop to choose
    inline processing (api/classification.py:_small); one whose structure is refused goes to the
    worker thread, where open_image refuses it, instead of costing the loop Pillow's parse."""
    hostile = tiff_strip_offsets(3000)
    assert len(hostile) <= 16 * 1024
    assert not _small([hostile])
    assert _small([tiff_strip_offsets(28)])  # a tidy one of the same size is still small
