"""Caps on the metadata structure of an untrusted image, checked on its raw bytes before Pillow
parses it: the directory entries, blocks, segments or chunks Pillow walks in Python while opening
or decoding it, before any pixel limit or memory budget applies (a 10 MB TIFF of 4.9 million strip
offsets took 55 s and 1.2 GB). Each scan stops once a cap is passed. Refused: 422 corrupt_image,
naming what was over which limit; an RLE BMP over its pixel limit: 413 image_too_large."""

from __future__ import annotations

import re
import struct
from typing import Any

from api.errors import ApiError

# TIFF, and EXIF (a TIFF structure: a JPEG's APP1 segments joined, a PNG's eXIf, a WebP's EXIF):
# Pillow reads each directory entry in Python, each value of a numeric tag it reads as a Python
# object, and a tile per strip. Entries: libtiff refuses a BigTIFF directory of over 4,096 as
# "probably not a valid IFD offset"; files carry tens (baseline, EXIF, GeoTIFF, DNG: under 200).
TIFF_MAX_ENTRIES = 4096
# Numeric values in a directory, strip and tile arrays aside: the largest legitimate arrays are a
# DNG's colour tables (~130,000 floats) and a 16-bit colour map (196,608 shorts), ~0.1 s of
# Pillow's time at this cap. Rationals cost ~4 us each (a Python object): files hold tens.
TIFF_MAX_VALUES = 1 << 18
TIFF_MAX_RATIONALS = 4096
# Strips or tiles (~10 us each): what the geometry needs (ceil(rows / RowsPerStrip), or tiles
# across x down, times planes), and one per 64 pixels, 16,384 to 65,536 (tiles have 16x16 pixels
# or more; one-row strips pass 64 pixels wide or more, or 16,384 rows tall: a 32x2000 or 50x16000
# scan of one-row strips, 1,024 refused them; ~0.15 s of Pillow's time at the floor).
TIFF_MAX_STRIPS = 1 << 16
TIFF_FREE_STRIPS = 1 << 14
TIFF_PIXELS_PER_STRIP = 64
# The directories Pillow reads: the first, and the EXIF, GPS and Interoperability ones.
_SUB_DIRECTORIES = {34665, 34853, 40965}
_TIFF = (b"MM\0*", b"II*\0", b"MM*\0", b"II\0*", b"MM\0+", b"II+\0")  # the headers Pillow reads
_MAX_DIRECTORIES = 4
_NUMERIC = {3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 16}  # types Pillow makes tuples of numbers of
_RATIONAL = {5, 10}
_NAMES = ("strip offsets", "strip byte counts", "tile offsets", "tile byte counts")
_ARRAYS = dict(zip((273, 279, 324, 325), _NAMES, strict=True))

# GIF: Pillow reads what precedes the first image a sub-block (<= 255 bytes) or stray byte at a
# time (~0.4 us each): 262,144 reads hold 64 MB of comments, a 100 KB XMP packet reads as ~1,300
# (16,384 refused the 1.2 MB XMP packets Photoshop's DocumentAncestors grow to). The gateway reads
# the first frame only (never seeks, counts frames or asks is_animated); pixels are read in C.
GIF_MAX_BLOCKS = 1 << 18

# JPEG: Pillow reads the segments before the first scan in Python (libjpeg the rest, in C). Camera
# files carry ~10; an ICC profile takes at most 255 APP2 segments, a 10 MB body 160 full ones.
JPEG_MAX_MARKERS = 1024
# Fill (0xFF) and stray bytes between segments, which Pillow skips one at a time.
JPEG_MAX_STRAY_BYTES = 16_384
# A DQT segment holds at most four tables (libjpeg's) of 64 16-bit entries; Pillow copies the
# rest of the segment after each table.
JPEG_MAX_DQT_LENGTH = 2 + 4 * 129
# Photoshop resource blocks in APP13 segments (Photoshop writes tens, clipping paths to ~1,000).
JPEG_MAX_PHOTOSHOP_BLOCKS = 4096
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE}  # frame headers (Pillow's SOF)
_BARE = set(range(0xD0, 0xDA)) | set(range(0xF0, 0xFE)) | {0xC8}  # markers without a length
_NOT_FILL = re.compile(rb"[^\xff]")

# PNG: Pillow reads every chunk up to IEND in Python (~8 us each: 0.13 s at this cap). Writers put
# image data in chunks of 8 KB (libpng) to 1 MB. libpng keeps 1,000 text and unknown chunks and
# skips the rest; the gateway answers PNGs of thousands too (skipping their content past 1 MiB).
PNG_MAX_CHUNKS = 16_384

# BMP: Pillow decodes RLE4 and RLE8 in Python, up to ~0.3 us a pixel (a 16 KB RLE8 file of
# 4000x4000 pixels took 4.5 s): 0.2 s at this cap (old Windows bitmaps and icons are smaller).
BMP_RLE_MAX_PIXELS = 1 << 20


def check_structure(data: bytes) -> None:
    """Refuse an image whose metadata structure is over a cap (a scan of its raw bytes)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        _png(data)
    elif data.startswith(b"\xff\xd8\xff"):
        _jpeg(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _gif(data)
    elif data[:4] in _TIFF:
        _tiff(data, "TIFF", geometry=True)
    elif data.startswith(b"BM"):
        _bmp(data)


def check_exif(info: dict[Any, Any]) -> None:
    """Refuse the EXIF Pillow gathered while opening (WebP, PNG text), before it parses it."""
    exif, raw = info.get("exif"), info.get("Raw profile type exif")  # ImageMagick's hex text
    if exif is None and isinstance(raw, str):
        try:
            exif = bytes.fromhex("".join(raw.split("\n")[3:]))
        except ValueError:  # Pillow's getexif fails too: no orientation
            return
    if isinstance(exif, bytes):
        _exif(exif)


def _refuse(message: str) -> ApiError:
    return ApiError(422, "corrupt_image", message)


def _over(total: int, cap: int, subject: str, noun: str) -> None:
    if total > cap:
        raise _refuse(f"{subject} has more than {cap:,} {noun}")


def _exif(blob: bytes) -> None:
    _tiff(re.sub(b"^(Exif\x00\x00){1,2}", b"", blob), "EXIF", geometry=False)  # as Pillow


_Entry = tuple[int, int, bytes]  # type, count, value field (the values, or their offset)


def _tiff(data: bytes, what: str, geometry: bool) -> None:
    if data[:4] not in _TIFF or len(data) < 16:
        return  # no TIFF structure: Pillow refuses it (or, as EXIF, reads none)
    order, big = "<" if data[:2] == b"II" else ">", data[2] == 43  # as Pillow reads them
    pending = [struct.unpack_from(order + ("Q" if big else "L"), data, 8 if big else 4)[0]]
    seen: set[int] = set()
    while pending and len(seen) < _MAX_DIRECTORIES:
        offset = pending.pop(0)
        if offset in seen or not 8 <= offset < len(data):
            continue
        name = f"the {what}'s {'first ' if not seen else ''}directory"
        seen.add(offset)
        tags = _directory(data, offset, order, big, name)
        if geometry and len(seen) == 1:
            _strips(tags, data, order)
        pending += [_first(tags[tag], data, order) for tag in _SUB_DIRECTORIES & tags.keys()]


def _directory(data: bytes, offset: int, order: str, big: bool, name: str) -> dict[int, _Entry]:
    counter, entry, size = ("Q", "HHQ8s", 20) if big else ("H", "HHL4s", 12)
    start = offset + struct.calcsize(order + counter)
    if start > len(data):
        return {}
    (count,) = struct.unpack_from(order + counter, data, offset)
    if count > TIFF_MAX_ENTRIES:
        raise _refuse(f"{name} has {count:,} entries; the limit is {TIFF_MAX_ENTRIES:,}")
    whole = min(count, (len(data) - start) // size)  # the entries the data holds
    table, values, rationals = data[start : start + whole * size], 0, 0
    tags: dict[int, _Entry] = {}
    for tag, kind, many, field in struct.iter_unpack(order + entry, table):
        tags.setdefault(tag, (kind, many, field))  # Pillow keeps a tag's first entry
        if kind in _NUMERIC and tag not in _ARRAYS:
            values += many
            rationals += many if kind in _RATIONAL else 0
            alone = f"(tag {tag} alone {many:,})"
            _over(values, TIFF_MAX_VALUES, name, f"numeric values {alone}")
            _over(rationals, TIFF_MAX_RATIONALS, name, f"rational values {alone}")
    return tags


def _first(entry: _Entry, data: bytes, order: str) -> int:
    """The first value of an integer tag (0 if it has none)."""
    kind, many, field = entry
    code = {3: "H", 4: "L", 13: "L", 16: "Q"}.get(kind)
    if code is None or many < 1:
        return 0
    width = struct.calcsize(order + code)
    if width * many > len(field):  # stored elsewhere: the field holds its offset
        at = struct.unpack_from(order + ("Q" if len(field) == 8 else "L"), field)[0]
        field = data[at : at + width]
    value: int = struct.unpack_from(order + code, field)[0] if len(field) >= width else 0
    return value


def _strips(tags: dict[int, _Entry], data: bytes, order: str) -> None:
    def first(tag: int, default: int = 0) -> int:
        return _first(tags[tag], data, order) if tag in tags else default

    width, height = first(256), first(257)
    planes = max(1, first(277, 1)) if first(284, 1) == 2 else 1
    cost = min(TIFF_MAX_STRIPS, max(TIFF_FREE_STRIPS, width * height // TIFF_PIXELS_PER_STRIP))
    rule = (
        f"one per {TIFF_PIXELS_PER_STRIP} of its {width * height:,} pixels, "
        f"{TIFF_FREE_STRIPS:,} to {TIFF_MAX_STRIPS:,}"
    )
    for tag in sorted(_ARRAYS.keys() & tags.keys()):
        many = tags[tag][1]
        if tag < 300:  # strips
            rows = min(first(278, height), height) or 1  # RowsPerStrip (default: all rows)
            needed = max(1, -(-height // rows) * planes)
            need = f"its {height:,} rows need at most {needed:,}"
        else:
            across, down = first(322), first(323)
            tiles = -(-width // across) * -(-height // down) if across * down else 1
            needed = max(1, tiles * planes)
            need = f"its {width}x{height} pixels in {across}x{down} tiles need at most {needed:,}"
        if many > needed or many > cost:
            planar = f" ({planes} planes)" if planes > 1 else ""
            limit = f"{need}{planar}" if many > needed else f"the limit is {cost:,} ({rule})"
            raise _refuse(f"the TIFF has {many:,} {_ARRAYS[tag]}; {limit}")


def _gif(data: bytes) -> None:
    flags = data[10] if len(data) > 12 else 0
    position, reads = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), 0

    def block() -> int:  # a sub-block: its length (0 ends a run), then its bytes
        nonlocal position, reads
        length = data[position] if position < len(data) else 0
        position, reads = position + 1 + length, reads + 1
        return length

    while position < len(data) and reads <= GIF_MAX_BLOCKS:
        introducer, position, reads = data[position], position + 1, reads + 1
        if introducer in b",;":  # the first image, or the trailer
            return
        if introducer != 0x21:  # a stray byte
            continue
        label = data[position] if position < len(data) else 0
        position += 1
        netscape, length = data.startswith(b"NETSCAPE2.0", position + 1), block()
        if label == 0xFE:  # a comment: its sub-blocks up to the empty one
            while length and reads <= GIF_MAX_BLOCKS:
                length = block()
            continue
        if label == 0xFF and length and netscape:
            block()  # the loop count
        while block() and reads <= GIF_MAX_BLOCKS:
            pass
    _over(reads, GIF_MAX_BLOCKS, "the GIF", "sub-blocks and stray bytes before its image")


def _jpeg(data: bytes) -> None:
    position, markers, stray, frames, blocks, mpf = 2, 0, 0, 0, 0, b""
    exif: list[bytes] = []
    while (at := data.find(b"\xff", position)) >= 0:
        fill = _NOT_FILL.search(data, at)
        end = fill.start() if fill else len(data)
        stray += end - position - 1
        _over(stray, JPEG_MAX_STRAY_BYTES, "the JPEG", "fill or stray bytes between segments")
        if end >= len(data):
            break
        code, position = data[end], end + 1
        if code == 0:  # 0xFF00 (escaped data): stray
            stray += 2
            continue
        markers += 1
        _over(markers, JPEG_MAX_MARKERS, "the JPEG", "segments before its scan (cameras write ~10)")
        if code == 0xDA or code < 0xC0:  # the first scan (libjpeg reads on), or no marker
            break
        if code in _BARE:
            continue
        length = int.from_bytes(data[position : position + 2], "big")
        segment = data[position + 2 : position + length]
        if code in _SOF:  # libjpeg refuses a second frame header, or another length
            frames, due = frames + 1, 8 + 3 * (segment[5] if len(segment) > 5 else 0)
            if frames > 1:
                raise _refuse("the JPEG has a second frame header (SOF)")
            if length != due:
                raise _refuse(f"the JPEG's frame header (SOF) has {length:,} bytes, not {due}")
        elif code == 0xDB and length > JPEG_MAX_DQT_LENGTH:
            need = f"four tables take at most {JPEG_MAX_DQT_LENGTH}"
            raise _refuse(f"the JPEG has a quantization segment (DQT) of {length:,} bytes; {need}")
        elif code == 0xE1 and segment.startswith(b"Exif\0\0"):
            exif.append(segment[6:] if exif else segment)  # Pillow joins them
        elif code == 0xE2 and segment.startswith(b"MPF\0"):
            mpf = segment[4:]  # an MPO's index (the last), which Pillow parses at open
        elif code == 0xED and segment.startswith(b"Photoshop 3.0\0"):
            blocks = _photoshop(segment, blocks)
        position += max(length, 2)
    _exif(b"".join(exif))
    _tiff(mpf, "MPF", geometry=False)


def _photoshop(segment: bytes, blocks: int) -> int:
    """Count an APP13 segment's resource blocks as Pillow walks them (it joins no others)."""
    offset = 14
    while segment[offset : offset + 4] == b"8BIM" and offset + 11 < len(segment):
        blocks += 1
        _over(blocks, JPEG_MAX_PHOTOSHOP_BLOCKS, "the JPEG", "Photoshop resource blocks (APP13)")
        offset += 7 + segment[offset + 6]  # signature, ID, name length, name
        offset += offset & 1
        offset += 4 + int.from_bytes(segment[offset : offset + 4], "big")
        offset += offset & 1
    return blocks


def _png(data: bytes) -> None:
    position, chunks, exif = 8, 0, b""
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IEND":
            break
        chunks += 1
        _over(chunks, PNG_MAX_CHUNKS, "the PNG", "chunks")
        text = kind == b"tEXt" and data.startswith(b"exif\0", position + 8)  # Pillow's "exif"
        if kind == b"eXIf" or text:  # Pillow keeps the last
            exif = data[position + 8 + 5 * text : position + 8 + length]
        position += 12 + length
    _exif(exif)


def _bmp(data: bytes) -> None:
    if len(data) < 34 or struct.unpack_from("<I", data, 30)[0] not in (1, 2):  # RLE8, RLE4
        return
    header, width, height = struct.unpack_from("<III", data, 14)
    height = 2**32 - height if data[25] == 0xFF else height  # top-down, as Pillow reads it
    if header in (40, 52, 56, 64, 108, 124) and width * height > BMP_RLE_MAX_PIXELS:
        what = f"an RLE-compressed BMP of {width}x{height} pixels, which Pillow decodes in Python"
        limit = f"the limit for those is {BMP_RLE_MAX_PIXELS:,} pixels"
        raise ApiError(413, "image_too_large", f"the image is {what}; {limit}")
