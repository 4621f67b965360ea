"""The images of a classify request's body: multipart ``file`` parts, JSON
``{"instances": [{"b64": ...}]}``, or one raw image, each with an optional ``top_k``."""

from __future__ import annotations

import asyncio
import json
import re

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ApiError
from fdl.b64 import b64_unescape


async def read_images(
    request: Request, max_bytes: int, max_batch: int
) -> tuple[list[bytes], int | None]:
    """The images and the optional top_k of a multipart, JSON or raw-image request.

    Args:
        request: the request whose body is read.
        max_bytes: the largest multipart part (the whole body's limit is enforced while it
            streams, by :mod:`api.middleware`).
        max_batch: the most images one request may carry.

    Returns:
        The encoded images and ``top_k`` (``None`` when the request gives none).

    Raises:
        ApiError: 415 for another content type; 422 (400 for over-deep JSON) for a body that
            does not hold what it should, with a code that says what.
    """
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=max_batch + 1, max_part_size=max_bytes)
        except StarletteHTTPException as error:
            # Starlette answers 400 for malformed multipart and for too many parts.
            if "Too many files" in str(error.detail):
                raise _batch_too_large(max_batch + 1, max_batch) from error
            raise ApiError(422, "invalid_multipart", f"{error.detail}") from error
        parts = form.getlist("file")
        files = [f for f in parts if isinstance(f, UploadFile)]
        if len(files) < len(parts):
            # Starlette reads a part without a filename as a text field: never an image here,
            # and never dropped in silence (the answer would have fewer predictions than parts).
            raise ApiError(
                422,
                "invalid_multipart",
                "a 'file' part has no filename, so it is not a file upload: send each image "
                'as Content-Disposition: form-data; name="file"; filename="a.png" '
                "(curl -F file=@a.png)",
            )
        if not files:
            raise ApiError(422, "no_image", "send the image(s) as multipart parts named 'file'")
        if len(files) > max_batch:
            raise _batch_too_large(len(files), max_batch)
        images = [await f.read() for f in files]
        await form.close()
        return images, _form_top_k(form.getlist("top_k"))
    if content_type.startswith("application/json"):
        body = await request.body()
        if len(body) <= JSON_ON_LOOP_BYTES:
            return _parse_json_instances(body, max_batch)
        # A large body's parse and base64 decoding take milliseconds: off the event loop.
        return await asyncio.to_thread(_parse_json_instances, body, max_batch)
    if content_type.startswith(RAW_IMAGE_TYPES):
        return await _read_raw_image(request)
    shown = content_type.split(";")[0].strip() or "none"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {shown!r} is not a classify body: send multipart/form-data with 'file' "
        'parts, JSON {"instances": [{"b64": ...}]}, or the image itself with its type '
        "(curl --data-binary @digit.png -H 'Content-Type: image/png')",
    )


# One image as the whole body: every format the decoder reads (api/image_open.py, SUPPORTED), and
# application/octet-stream (the decoder tells the format from the bytes, whatever the type says).
RAW_IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "application/octet-stream",
)
# JSON bodies up to this size are parsed on the event loop; larger ones in a worker thread.
JSON_ON_LOOP_BYTES = 256 * 1024
# The documented shape has two "{" or "," per instance and a few more: this many per image of the
# batch limit, plus SLACK, leave room for extra keys without letting json.loads build millions of
# objects (an empty "{}" costs 64 bytes of memory for 2 bytes of body).
JSON_MARKS_PER_IMAGE = 4
JSON_MARKS_SLACK = 64
MAX_TOP_K = 1000
# A string top_k: ASCII digits only, and few of them (leading zeros allowed, as int() reads them).
_TOP_K_DIGITS = re.compile(r"[0-9]{1,16}")


async def _read_raw_image(request: Request) -> tuple[list[bytes], int | None]:
    """One image sent as the whole body (``curl --data-binary @digit.png -H 'Content-Type:
    image/png'``), with top_k in the query string: no multipart parsing, no base64."""
    body = await request.body()
    if not body:
        raise ApiError(422, "no_image", "the body is empty: send the image's bytes")
    return [body], _parse_top_k(request.query_params.get("top_k"))


def _form_top_k(fields: list[str | UploadFile]) -> int | None:
    """The multipart ``top_k``: a text field (the last, if repeated, as in the query string); a
    file part (``curl -F top_k=@file``) is refused, never ignored."""
    if any(not isinstance(field, str) for field in fields):
        raise ApiError(
            422,
            "invalid_top_k",
            "top_k must be a text field (curl -F top_k=3), not a file part",
        )
    return _parse_top_k(fields[-1]) if fields else None


def _batch_too_large(count: int, limit: int) -> ApiError:
    more = "or more " if count == limit + 1 else ""
    return ApiError(
        422,
        "batch_too_large",
        f"{count} {more}images in one request; the limit is {limit}",
    )


def _parse_top_k(raw: object) -> int | None:
    """``top_k`` as plain decimal: a JSON integer, or a string of ASCII digits only (``int()``
    would also take " 3 ", "+3", "3_0" and other scripts' digits, such as Arabic-Indic ones).

    Raises:
        ApiError: 422 ``invalid_top_k``.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        if not _TOP_K_DIGITS.fullmatch(raw):
            raise ApiError(
                422, "invalid_top_k", "top_k must be a positive integer in ASCII digits (0-9)"
            )
        value = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        raise ApiError(422, "invalid_top_k", "top_k must be a positive integer")
    if value < 1 or value > MAX_TOP_K:
        raise ApiError(422, "invalid_top_k", f"top_k must be between 1 and {MAX_TOP_K}")
    return value


def _check_json_size(body: bytes, max_batch: int) -> None:
    """Refuses a body with more objects, arrays and values than the documented shape could have,
    before ``json.loads`` builds them: counts ``{``, ``[`` and ``,`` anywhere (base64 has none).

    Raises:
        ApiError: 400 ``json_too_complex``.
    """
    most = JSON_MARKS_PER_IMAGE * max_batch + JSON_MARKS_SLACK
    marks = 0
    for mark in (b"{", b"[", b","):
        marks += body.count(mark)
        if marks > most:
            raise ApiError(
                400,
                "json_too_complex",
                f"the JSON body has more than {most} '{{', '[' and ',' (in strings too); send "
                '{"instances": [{"b64": ...}, ...], "top_k": n}',
            )


def _parse_json_instances(body: bytes, max_batch: int) -> tuple[list[bytes], int | None]:
    _check_json_size(body, max_batch)
    try:
        payload = json.loads(body)
    except RecursionError as error:
        raise ApiError(400, "json_too_deep", "the JSON body is nested too deeply") from error
    except ValueError as error:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer of more
        # than 4300 digits (Python's int-string conversion limit).
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {error}") from error
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ApiError(422, "no_image", "'instances' must be a non-empty list of {\"b64\": ...}")
    if len(instances) > max_batch:
        raise _batch_too_large(len(instances), max_batch)
    images = []
    for index, item in enumerate(instances):
        encoded = item.get("b64") if isinstance(item, dict) else None
        if not isinstance(encoded, str):
            raise ApiError(422, "invalid_instance", f'instances[{index}] must be {{"b64": str}}')
        decoded = b64_unescape(encoded)
        if decoded is None:
            raise ApiError(422, "invalid_base64", f"instances[{index}].b64 is not valid base64")
        images.append(decoded)
    return images, _parse_top_k(payload.get("top_k"))
