"""JSON strings as rapidjson 1.1.0 stores them for TF Serving (tensorflow/serving @ 9d981c5c
parses request bodies without ``kParseValidateEncodingFlag``).

- A string holding bytes that are not UTF-8 keeps them: rapidjson copies a string's bytes
  unchecked, so they reach the tensor as sent. Python's parser reads such a body decoded with
  ``surrogateescape`` (each such byte a lone surrogate U+DC80-U+DCFF); :func:`keep_bytes` turns
  the strings that hold one into :class:`RawString`, which carries the bytes. A body that also
  escapes a lone surrogate in that range (``\\udc80``) gets that byte too, not the escape's
  three bytes: Python's parser makes the same character of both.
- :func:`utf8`: the bytes of a string Python's parser read from a UTF-8 body: a lone low
  surrogate escape (``\\udc80``) is its three UTF-8 bytes, as rapidjson 1.1.0's reader encodes
  it; a lone high one (``\\ud800``) is none, as its reader refuses it.
"""

from __future__ import annotations

import codecs
import re
from typing import Any


class RawString(str):
    """A JSON string of a body that is not UTF-8: the text Python's parser read (each byte that
    is not UTF-8 a lone surrogate, U+DC80-U+DCFF) and, in ``raw``, the bytes rapidjson keeps (it
    copies them unchecked), or None for a lone high surrogate escape, which rapidjson refuses."""

    raw: bytes | None


def _surrogates(error: UnicodeError, raw_bytes: bool) -> tuple[bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = bytearray()
    for char in error.object[error.start : error.end]:
        if raw_bytes and "\udc80" <= char <= "\udcff":  # a byte the body had (surrogateescape)
            out.append(ord(char) - 0xDC00)
        elif "\udc00" <= char <= "\udfff":  # rapidjson 1.1.0 encodes a lone low one as it is
            out += char.encode("utf-8", "surrogatepass")
        else:
            raise error
    return bytes(out), error.end


codecs.register_error("fdl-rapidjson", lambda error: _surrogates(error, False))
codecs.register_error("fdl-rapidjson-raw", lambda error: _surrogates(error, True))
_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def has_bytes(text: str, end: int) -> bool:
    """Whether ``text[:end]``, decoded with ``surrogateescape``, had bytes that are not UTF-8."""
    return _BYTE.search(text, 0, end) is not None


def utf8(text: str) -> bytes | None:
    """The bytes rapidjson 1.1.0 stores for a JSON string Python's parser read: UTF-8, with a
    lone low surrogate escape (``\\udc80``) as its three bytes, as its reader encodes it; None
    for a lone high one, which its reader refuses (``The surrogate pair in string is
    invalid.``)."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "fdl-rapidjson")
    except UnicodeEncodeError:
        return None


def _raw_string(text: str) -> RawString:
    string = RawString(text)
    try:
        string.raw = text.encode("utf-8", "fdl-rapidjson-raw")
    except UnicodeEncodeError:
        string.raw = None
    return string


def keep_bytes(value: Any) -> Any:
    """``value`` with each string value that holds bytes not UTF-8 as a :class:`RawString`,
    without recursion. (Keys stay text: none can name an input.)"""
    if type(value) is str:
        return _raw_string(value) if _BYTE.search(value) else value
    stack = [value]
    while stack:
        item = stack.pop()
        keys: Any = range(len(item)) if type(item) is list else list(item)
        for key in keys:
            child = item[key]
            if type(child) is str:
                if _BYTE.search(child):
                    item[key] = _raw_string(child)
            elif type(child) is list or type(child) is dict:
                stack.append(child)
    return value
