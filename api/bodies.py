"""The images of a classify request's body: multipart ``file`` parts, JSON
``{"instances": [{"b64": ...}]}``, or one raw image, each with an optional ``top_k`` (in the
body or the query string); and the content-type check of the JSON routes' bodies."""

from __future__ import annotations

import asyncio
import email.message
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import ApiError, json_body_refusal
from api.json_body import JsonBodyError, parse_json
from api.schemas import is_decimal
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
        The encoded images and ``top_k`` (``None`` when the request gives none): from the body
        (multipart field, JSON key) or the query string, whatever the body's kind.

    Raises:
        ApiError: 415 for another content type; 422 (400 for over-deep JSON) for a body that
            does not hold what it should, with a code that says what; 422 ``invalid_top_k`` for
            a ``top_k`` the query string and the body both give, with different values.
    """
    images, top_k = await _read_body(request, max_bytes, max_batch)
    # Parsing the query string costs ~3 µs per request: only when there is one.
    query_top_k = request.query_params.get("top_k") if request.scope["query_string"] else None
    return images, _either_top_k(query_top_k, top_k)


def _either_top_k(raw_query: str | None, in_body: int | None) -> int | None:
    """The query string's ``top_k`` or the body's: when both give one, they must agree."""
    in_query = _parse_top_k(raw_query)
    if in_query is not None and in_body is not None and in_query != in_body:
        raise ApiError(
            422,
            "invalid_top_k",
            f"top_k is {in_query} in the query string but {in_body} in the body: send one",
        )
    return in_body if in_query is None else in_query


async def _read_body(
    request: Request, max_bytes: int, max_batch: int
) -> tuple[list[bytes], int | None]:
    """:func:`read_images` without the query string: the images and the body's ``top_k``."""
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
TOP_K_MAX_DIGITS = 16


async def _read_raw_image(request: Request) -> tuple[list[bytes], int | None]:
    """One image sent as the whole body (``curl --data-binary @digit.png -H 'Content-Type:
    image/png'``; top_k in the query string): no multipart parsing, no base64."""
    body = await request.body()
    if not body:
        raise ApiError(422, "no_image", "the body is empty: send the image's bytes")
    return [body], None


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
        if not is_decimal(raw, TOP_K_MAX_DIGITS):
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
        payload = parse_json(body)
    except JsonBodyError as error:
        # Syntax, not UTF-8, an integer of more than 4300 digits, a key given twice: 422.
        status, code = (400, "json_too_deep") if error.kind == "too_deep" else (422, "invalid_json")
        raise ApiError(status, code, error.message) from error
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


def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this type as JSON: application/json or
    application/*+json (parameters such as a charset allowed)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def require_json_body(request: Request) -> None:
    """415 ``unsupported_media_type`` for a JSON route's body sent as another type (form data,
    text/plain) or with none: FastAPI would hand its bytes to validation, whose 422 "Input should
    be a valid dictionary" says nothing of the type. An empty body is left to FastAPI's 422
    ("Field required"). A JSON body is read again by :func:`api.json_body.parse_json` (FastAPI
    parsed it already, keeping the last of a key given twice): 422 ``invalid_request`` naming a
    key given twice; FastAPI's own parse failures are told by :mod:`api.errors`."""
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    if content_type and _is_json(content_type):
        if body:
            try:
                parse_json(body)
            except JsonBodyError as error:
                raise json_body_refusal(error) from error
        return
    if not body:
        return
    shown = content_type.split(";")[0].strip() or "none"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {shown!r} is not JSON: send the body with Content-Type: "
        "application/json (curl --json '{...}', or -H 'Content-Type: application/json')",
    )


# A JSON route's dependency (before its other ones): FastAPI solves it before validating the body.
JsonBodyDep = Annotated[None, Depends(require_json_body)]
