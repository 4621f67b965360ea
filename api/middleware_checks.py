"""What :class:`api.middleware.GatewayMiddleware` checks in a request's headers before the app
runs (its Host against FDL_ALLOWED_HOSTS, its Content-Length against the body limit), and the
errors it answers itself, sent outside the app."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Send

from api.errors import ApiError, error_body


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "body_too_large", f"the request body exceeds {limit:,} bytes")


def host_not_allowed(host: bytes | None) -> ApiError:
    """The refusal of a request whose Host is not in FDL_ALLOWED_HOSTS, or that has none (an
    HTTP/1.0 request)."""
    if host is None:
        said = (
            "the request has no Host header, and this gateway answers only to the names in "
            "FDL_ALLOWED_HOSTS; send one of those (HTTP/1.1 always does)"
        )
    else:
        shown = host[:100].decode("latin-1")
        said = (
            f"the Host header {shown!r} is not a name this gateway answers to "
            "(FDL_ALLOWED_HOSTS); use one of those"
        )
    return ApiError(400, "host_not_allowed", f"{said}, e.g. http://localhost:<port>")


def host_name(value: bytes) -> bytes:
    """The name of a Host header, lower-case, without its port: ``[::1]`` of ``[::1]:8000``."""
    value = value.lower()
    if value.startswith(b"["):
        return value[: value.find(b"]") + 1]
    return value.partition(b":")[0]


def declared_length(raw: bytes, limit: int) -> int | None:
    """The value of a Content-Length header, or None when it is absent or not all digits.

    Any value over ``limit`` comes back as ``limit + 1``, without ``int()`` of the digits (Python
    refuses ``int()`` of more than 4300 digits, and zeros can pad a small value to any length).
    """
    if not raw.isdigit():
        return None
    digits = raw.lstrip(b"0")
    if len(digits) > len(str(limit)):
        return limit + 1
    return min(int(digits or b"0"), limit + 1)


async def send_error(send: Send, error: ApiError) -> None:
    """``error`` as a whole JSON answer, the connection closed after it."""
    body = json.dumps(error_body(error.code, error.message)).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
