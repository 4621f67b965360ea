"""Opening untrusted image files safely with Pillow: the formats read, the checks made from the
headers before any pixel is decoded (metadata structure, in :mod:`api.image_structure`; pixels,
JPEG scans, PNG metadata), the memory decoding will take, and Pillow's errors as API errors. The
size decoding may reduce an image to (:class:`fdl.images.WorkSize`) and a JPEG's draft scale are
those training reads with."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from PIL import Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from api.errors import ApiError
from api.image_structure import check_exif, check_structure
from fdl.images import DECODING_ERRORS, WorkSize, draft, is_jpeg

DEFAULT_MAX_PIXELS = 16_000_000
SUPPORTED = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# The most scans a JPEG may have: progressive encoders write about 10 (mozjpeg's up to ~20).
MAX_JPEG_SCANS = 100
# open_image checks the pixel count itself (before any pixel is decoded, after a JPEG's draft
# scale is chosen), so Pillow's own warning is redundant; its error stays armed far above.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# Decompressed PNG metadata (text, ICC profiles) read per image; past it, such chunks are skipped.
MAX_PNG_METADATA_BYTES = 1 << 20
# Where open_image notes the pixel count of the canvas before any draft scale (image.info).
_CANVAS = "fdl_canvas_pixels"


class _BoundedPngStream(PngImagePlugin.PngStream):
    """Pillow's PNG chunk reader, inflating at most MAX_PNG_METADATA_BYTES of metadata per image.

    Each zTXt, iTXt or iCCP chunk inflates to up to 1 MiB (Pillow's MAX_TEXT_CHUNK); Pillow
    bounds text at 64 MiB per image and ICC profiles not at all, so a 9.5 MB PNG of 9,000 small
    iCCP chunks of zeros took 43 s to open (then on the event loop), and 64 PNGs
    of 64 zTXt chunks (4 MB) took 4 GB. A compressed chunk is charged the most it may inflate,
    whatever Pillow keeps (a bad zlib checksum is found after the whole inflate). Past the bound
    chunks are read and CRC-checked, not inflated: the gateway uses no text; the first (the ICC
    profile) stays. A chunk that inflates past MAX_TEXT_CHUNK is skipped too (Pillow's own error
    would refuse the image), after at most that much inflating."""

    def _spent(self) -> bool:
        return self.text_memory >= MAX_PNG_METADATA_BYTES

    def _skip(self, length: int) -> bytes:
        assert self.fp is not None
        return ImageFile._safe_read(self.fp, length)

    def _inflating(self, read: Callable[[int, int], bytes], pos: int, length: int) -> bytes:
        if self._spent():
            return self._skip(length)
        try:
            return read(pos, length)
        except ValueError:
            # It inflates past MAX_TEXT_CHUNK (Pillow stops inflating there and raises): skipped,
            # as past the bound, rather than refusing pixels that may be fine.
            assert self.fp is not None
            self.fp.seek(pos)
            return self._skip(length)
        finally:
            self.text_memory += PngImagePlugin.MAX_TEXT_CHUNK

    def chunk_iCCP(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_iCCP, pos, length)

    def chunk_tEXt(self, pos: int, length: int) -> bytes:
        return self._skip(length) if self._spent() else super().chunk_tEXt(pos, length)

    def chunk_zTXt(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_zTXt, pos, length)

    def chunk_iTXt(self, pos: int, length: int) -> bytes:
        return self._inflating(super().chunk_iTXt, pos, length)


PngImagePlugin.PngStream = _BoundedPngStream  # type: ignore[misc]  # what PngImageFile opens with


def set_max_pixels(max_pixels: int) -> None:
    # Pillow refuses above twice this at open; a JPEG may be 64 times larger in its file than
    # decoded at 1/8 scale, and open_image checks what is decoded.
    Image.MAX_IMAGE_PIXELS = max_pixels * 32


def open_image(
    data: bytes, work: WorkSize | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open (headers only, nothing decoded) and check the pixels that decoding will produce.

    A JPEG is set to decode at 1/2, 1/4 or 1/8 scale (Pillow's draft mode, done by libjpeg while
    decoding) as long as the result still covers the work size.
    """
    if not data:
        raise ApiError(422, "empty_image", "the image is empty (0 bytes)")
    with decoding_errors():
        # Metadata Pillow would walk in Python (entries, blocks, segments, chunks) within caps,
        # before it parses any (api/image_structure.py); then the EXIF it gathered while opening.
        check_structure(data)
        image = Image.open(io.BytesIO(data), formats=SUPPORTED)
        check_exif(image.info)
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ApiError(422, "corrupt_image", f"the image has no pixels ({width}x{height})")
        if _progressive(image) and width * height > max_pixels:
            # libjpeg keeps a progressive JPEG's coefficients for the whole canvas, 2 bytes a
            # sample, whatever the draft scale: its full size is what decoding costs.
            raise ApiError(
                413,
                "image_too_large",
                f"the image is a progressive JPEG of {width}x{height} pixels, decoded at full "
                f"size; the limit is {max_pixels:,} pixels",
            )
        if is_jpeg(image) and data.count(b"\xff\xda") > MAX_JPEG_SCANS:
            # Each scan of a progressive JPEG is another pass over the whole canvas; libjpeg
            # has no limit of its own. Entropy-coded data stuffs every 0xFF, so the count of
            # start-of-scan markers is the scan count (more, with an EXIF thumbnail's, or an
            # MPO's further images': never decoded, but counted, which only errs on the safe side).
            raise ApiError(
                422,
                "corrupt_image",
                f"the JPEG has more than {MAX_JPEG_SCANS} scans (usual ones have at most 12)",
            )
        image.info[_CANVAS] = width * height
        if work:
            draft(image, work)
        if image.width * image.height > max_pixels:
            raise ApiError(
                413,
                "image_too_large",
                f"the image has {width}x{height} pixels; the limit is {max_pixels:,} pixels",
            )
        return image


def decode_cost(image: Image.Image) -> int:
    """The memory decoding an opened image takes, in decoded pixels (3 bytes each at most).

    The pixels it decodes to; for a progressive JPEG, also its 16-bit coefficients of the full
    canvas, which libjpeg holds while it decodes even at a draft scale.
    """
    pixels = image.width * image.height
    if not _progressive(image):
        return pixels
    canvas = int(image.info.get(_CANVAS, pixels))
    layers = len(image.getbands())
    return pixels + -(-2 * layers * canvas // 3)


def _progressive(image: Image.Image) -> bool:
    return is_jpeg(image) and bool(image.info.get("progressive"))


@contextmanager
def decoding_errors() -> Iterator[None]:
    """Pillow's errors while opening or decoding an image as the gateway's: 413, 415 or 422."""
    try:
        yield
    except ApiError:
        raise
    except Image.DecompressionBombError as error:
        raise ApiError(
            413, "image_too_large", f"the image is too large to decode: {error}"
        ) from error
    except UnidentifiedImageError as error:
        raise ApiError(
            415,
            "unsupported_image",
            "the file is not an image in a supported format (PNG, JPEG, GIF, BMP, WebP, TIFF)",
        ) from error
    except DECODING_ERRORS as error:
        raise ApiError(422, "corrupt_image", f"the image could not be decoded: {error}") from error
    except MemoryError as error:
        raise ApiError(413, "image_too_large", "the image is too large to decode") from error
