"""A generated corpus of awkward and bad inputs for the classify endpoints.

Each case says what a client sends and which statuses are right. Odd but valid images (16-bit,
CMYK, EXIF-rotated, transparent, animated ...) must classify (200); broken ones must get a clear
4xx; none may get a 5xx. ``python -m harness.corpus DIR`` writes the image files to DIR.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

OK = frozenset({200})
BAD = frozenset({415, 422})
TOO_LARGE = frozenset({413})


@dataclass(frozen=True)
class Case:
    name: str
    expected: frozenset[int]
    file: bytes | None = None  # sent as one multipart part named "file"
    filename: str = "image.png"
    json_body: object | None = None
    raw: bytes | None = None
    content_type: str | None = None
    files: int = 1  # copies of ``file`` in one request


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _digit(size: int = 64, mode: str = "L") -> Image.Image:
    """A dark '1'-like stroke on light paper."""
    array = np.full((size, size), 235, np.uint8)
    array[size // 6 : size - size // 6, size // 2 - size // 16 : size // 2 + size // 16] = 20
    return Image.fromarray(array, "L").convert(mode)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + (_png_chunk(b"IDAT", idat) if idat else b"")
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def _png_bomb(side: int = 8_000) -> bytes:
    """A real PNG of side x side zero pixels: ~64 MB decoded from a few tens of KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return _png_header_only(side, side, data)


def _gif_huge_screen() -> bytes:
    gif = _save(Image.new("P", (4, 4)), "GIF")
    return gif[:6] + struct.pack("<HH", 65535, 65535) + gif[10:]


def _bmp_huge() -> bytes:
    bmp = bytearray(_save(Image.new("RGB", (4, 4)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 100_000, 100_000)
    return bytes(bmp)


def _tiff_huge(side: int = 200_000) -> bytes:
    """A hand-made little-endian TIFF header declaring side x side 8-bit pixels."""
    entries = [
        (256, 4, side),  # ImageWidth, LONG
        (257, 4, side),  # ImageLength
        (258, 3, 8),  # BitsPerSample, SHORT
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # PhotometricInterpretation: black is zero
        (273, 4, 0),  # StripOffsets (patched below)
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, side),  # RowsPerStrip
        (279, 4, 16),  # StripByteCounts
    ]
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def _exif_rotated() -> bytes:
    image = _digit(48, "RGB").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return _save(image, "JPEG", exif=exif.tobytes())


def _transparent(ink: int) -> bytes:
    array = np.zeros((64, 64, 4), np.uint8)
    array[10:54, 28:36] = (ink, ink, ink, 255)
    return _save(Image.fromarray(array, "RGBA"), "PNG")


def _animated_gif() -> bytes:
    frames = [_digit(40, "P"), Image.new("P", (40, 40), 3), Image.new("P", (40, 40), 9)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _sixteen_bit() -> bytes:
    array = (np.asarray(_digit(40), np.uint16) * 257).astype(np.uint16)
    return _save(Image.fromarray(array), "PNG")


def _flip(data: bytes, at: float) -> bytes:
    index = int(len(data) * at)
    return data[:index] + bytes(b ^ 0xFF for b in data[index : index + 32]) + data[index + 32 :]


def image_cases() -> list[Case]:
    digit = _digit()
    png, jpeg = _save(digit, "PNG"), _save(digit.convert("RGB"), "JPEG", quality=85)
    gif, webp = _save(digit.convert("P"), "GIF"), _save(digit, "WEBP")
    tiff, bmp = _save(digit, "TIFF"), _save(digit, "BMP")
    palette_t = digit.convert("P")
    palette_t.info["transparency"] = 0
    cases = [
        Case("png_grayscale", OK, png),
        Case("png_rgb", OK, _save(digit.convert("RGB"), "PNG")),
        Case("png_16bit", OK, _sixteen_bit()),
        Case("png_palette", OK, _save(digit.convert("P"), "PNG")),
        Case("png_palette_transparency", OK, _save(palette_t, "PNG")),
        Case("png_la_alpha", OK, _save(digit.convert("LA"), "PNG")),
        Case("png_transparent_dark_ink", OK, _transparent(0)),
        Case("png_transparent_white_ink", OK, _transparent(255)),
        Case("png_1x1", OK, _save(Image.new("L", (1, 1), 0), "PNG")),
        Case("png_2000x1", OK, _save(Image.new("L", (2000, 1), 0), "PNG")),
        Case("png_all_white", OK, _save(Image.new("L", (28, 28), 255), "PNG")),
        Case("png_all_black", OK, _save(Image.new("L", (28, 28), 0), "PNG")),
        Case("png_1bit", OK, _save(digit.convert("1"), "PNG")),
        Case("jpeg_rgb", OK, jpeg),
        Case("jpeg_grayscale", OK, _save(digit, "JPEG")),
        Case("jpeg_cmyk", OK, _save(digit.convert("CMYK"), "JPEG")),
        Case("jpeg_progressive", OK, _save(digit.convert("RGB"), "JPEG", progressive=True)),
        Case("jpeg_exif_rotated", OK, _exif_rotated()),
        Case("jpeg_large_3000x2000", OK, _save(digit.convert("RGB").resize((3000, 2000)), "JPEG")),
        Case("jpeg_named_png", OK, jpeg, filename="photo.png"),
        Case("gif", OK, gif),
        Case("gif_animated", OK, _animated_gif()),
        Case("webp", OK, webp),
        Case("webp_lossless_rgba", OK, _save(digit.convert("RGBA"), "WEBP", lossless=True)),
        Case("tiff", OK, tiff),
        Case("tiff_32bit_int", OK, _save(Image.fromarray(np.asarray(digit, np.int32)), "TIFF")),
        Case("tiff_float", OK, _save(Image.fromarray(np.asarray(digit, np.float32)), "TIFF")),
        Case("tiff_multipage", OK, _save(digit, "TIFF", save_all=True, append_images=[digit])),
        Case("bmp", OK, bmp),
        Case("bmp_rgba", OK, _save(digit.convert("RGBA"), "BMP")),
        # Broken, unsupported or hostile.
        Case("zero_bytes", BAD, b""),
        Case("text_named_png", BAD, b"this is plain text, not a picture\n" * 4),
        Case("html_named_jpg", BAD, b"<html><body>hi</body></html>", filename="a.jpg"),
        Case("svg", BAD, b'<svg xmlns="http://www.w3.org/2000/svg"/>', filename="a.svg"),
        Case("pdf", BAD, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
        Case("zip", BAD, b"PK\x03\x04" + b"\x00" * 60),
        Case("ico_not_supported", BAD, _save(digit.convert("RGB"), "ICO")),
        Case("eps_not_supported", BAD, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n"),
        Case("random_bytes", BAD, np.random.default_rng(0).bytes(4096)),
        Case("png_truncated_half", BAD, png[: len(png) // 2]),
        Case("png_signature_only", BAD, png[:8]),
        Case("png_no_idat", BAD, _png_header_only(28, 28)),
        Case("png_zero_width", BAD, _png_header_only(0, 28, zlib.compress(b"\x00" * 29))),
        Case("png_corrupt_idat", BAD, _flip(png, 0.6)),
        Case("jpeg_truncated_half", BAD, jpeg[: len(jpeg) // 2]),
        Case("jpeg_soi_only", BAD, b"\xff\xd8\xff"),
        Case("gif_truncated", BAD, gif[: len(gif) // 2]),
        Case("webp_truncated", BAD, webp[: len(webp) // 2]),
        Case("tiff_truncated", BAD, tiff[: len(tiff) // 3]),
        Case("bmp_truncated", BAD, bmp[: len(bmp) // 2]),
        Case("jpeg_corrupt_middle", OK | BAD, _flip(jpeg, 0.5)),
        # Decompression bombs and absurd dimensions: refused before decoding.
        Case("png_bomb_8000x8000", TOO_LARGE, _png_bomb()),
        Case("png_header_100000x100000", TOO_LARGE, _png_header_only(100_000, 100_000)),
        Case("png_header_1x50000000", TOO_LARGE, _png_header_only(1, 50_000_000)),
        Case("gif_65535x65535", TOO_LARGE, _gif_huge_screen()),
        Case("bmp_100000x100000", TOO_LARGE, _bmp_huge()),
        Case("tiff_200000x200000", TOO_LARGE, _tiff_huge()),
    ]
    return cases


def request_cases() -> list[Case]:
    png = _save(_digit(), "PNG")
    b64 = base64.b64encode(png).decode()
    return [
        Case("json_ok", OK, json_body={"instances": [{"b64": b64}], "top_k": 2}),
        Case("json_not_json", BAD, raw=b"{not json", content_type="application/json"),
        Case("json_not_utf8", BAD, raw=b"\xff\xfe\x00{", content_type="application/json"),
        Case("json_array_body", BAD, json_body=[1, 2, 3]),
        Case("json_no_instances", BAD, json_body={"images": []}),
        Case("json_empty_instances", BAD, json_body={"instances": []}),
        Case("json_instance_not_object", BAD, json_body={"instances": ["abc"]}),
        Case("json_b64_not_string", BAD, json_body={"instances": [{"b64": 12}]}),
        Case("json_b64_invalid", BAD, json_body={"instances": [{"b64": "***not base64***"}]}),
        Case("json_b64_not_image", BAD, json_body={"instances": [{"b64": "aGVsbG8="}]}),
        Case("json_top_k_zero", BAD, json_body={"instances": [{"b64": b64}], "top_k": 0}),
        Case("json_top_k_text", BAD, json_body={"instances": [{"b64": b64}], "top_k": "x"}),
        Case("json_top_k_bool", BAD, json_body={"instances": [{"b64": b64}], "top_k": True}),
        Case(
            "json_batch_65",
            BAD,
            json_body={"instances": [{"b64": b64}] * 65},
        ),
        Case("multipart_batch_65", BAD, png, files=65),
        Case("text_plain_body", BAD, raw=png, content_type="text/plain"),
        Case("no_content_type", BAD, raw=png, content_type=""),
        Case(
            "multipart_without_file",
            BAD,
            raw=b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\nhi\r\n--xyz--\r\n',
            content_type="multipart/form-data; boundary=xyz",
        ),
        Case(
            "multipart_broken",
            BAD | {400},
            raw=b"--xyz\r\nContent-Disposition: form-da",
            content_type="multipart/form-data; boundary=xyz",
        ),
    ]


def all_cases() -> list[Case]:
    return image_cases() + request_cases()


def write_corpus(folder: Path, cases: Callable[[], list[Case]] = image_cases) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for case in cases():
        if case.file is not None:
            (folder / f"{case.name}__{case.filename}").write_bytes(case.file)
            count += 1
        elif case.json_body is not None:
            (folder / f"{case.name}.json").write_text(json.dumps(case.json_body))
            count += 1
    return count


if __name__ == "__main__":
    print(write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "bad-inputs")), "files")
