"""JSON text as TF Serving's REST layer reads and prints it (``json_tensor.cc`` on rapidjson).

- :func:`parse_document`: a request body. TF Serving parses with ``kParseStopWhenDoneFlag``, so
  whatever follows the first complete JSON value is never read: ``{"instances": [1]} xyz`` is
  the request ``{"instances": [1]}``.
- :func:`debug_string`: a value in an error message, as ``JsonValueToDebugString`` prints it
  (rapidjson's ``PrettyWriter`` with single-line arrays, cut once 256 bytes are written).
- :func:`type_name`: ``JsonTypeString``, the JSON type an error names.
- :func:`b64_unescape`: ``{"b64": …}`` values, decoded as ``absl::Base64Unescape`` decodes them.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from serving.errors import invalid


def _finite_float(text: str) -> float:
    """A JSON number written with a fraction or an exponent; one beyond a double's range is a
    parse error, as rapidjson's (``NaN`` and ``Infinity`` spelled out are constants, not this)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double")
    return value


_DECODER = json.JSONDecoder(parse_float=_finite_float)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON whitespace


def parse_document(raw: bytes) -> Any:
    """The first JSON value of a body; bytes after it are ignored, as TF Serving ignores them.

    orjson reads strict JSON (the common case); anything else goes to Python's parser, which also
    reads ``NaN`` and ``Infinity`` (as TF Serving's reader does) and UTF-16, and words the error.
    """
    try:
        return orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        pass
    try:
        encoding = json.detect_encoding(raw)
        # Bytes after the document may be anything: they are decoded leniently and never read.
        text = raw.decode(encoding, "surrogateescape" if encoding == "utf-8" else "strict")
        start = _SPACE.match(text).end()  # type: ignore[union-attr]
        value, end = _DECODER.raw_decode(text, start)
        text[:end].encode(encoding)  # the document itself must be valid text
    except (ValueError, UnicodeError) as error:
        raise invalid(f"JSON Parse error: {error}") from error
    except RecursionError:  # thousands of nested brackets: a 400, never a 500
        raise invalid("JSON Parse error: nested too deeply") from None
    return value


def may_hold_booleans(raw: bytes) -> bool:
    """Whether a body may hold ``true`` or ``false``: it has the word, or is not UTF-8 (UTF-16
    and UTF-32 JSON have NUL bytes; UTF-8 JSON never has one outside a broken document)."""
    return b"true" in raw or b"false" in raw or b"\x00" in raw


def type_name(value: Any) -> str:
    """rapidjson's name of a value's JSON type (``JsonTypeString``)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


_MAX_DEBUG_BYTES = 256  # json_tensor.cc's kMaxJsonDebugStringBytes
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"
_CONTROL = re.compile(r'["\\\x00-\x1f]')


def _string(text: str) -> str:
    return '"' + _CONTROL.sub(lambda m: _ESCAPES.get(m[0], f"\\u{ord(m[0]):04X}"), text) + '"'


def _double(value: float) -> str | None:
    """rapidjson's ``Writer::Double`` (Grisu digits, ``Prettify``); None for NaN and infinities,
    which its default writer refuses (the print stops there)."""
    if not math.isfinite(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, k = Decimal(repr(abs(value))).normalize().as_tuple()
    digits, k = "".join(map(str, digit_tuple)), int(k)
    kk = len(digits) + k  # 10^(kk-1) <= value < 10^kk
    if k >= 0 and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = f"{digits[:kk]}.{digits[kk:]}"
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif len(digits) == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _scalar(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return str(value)
    try:
        return _double(float(value))
    except OverflowError:  # rapidjson would not have parsed it
        return None


def _tokens(value: Any) -> Iterator[tuple[str, str | None]]:
    """(kind, text) in document order, without recursion: kind is "value", "key", "start" (a
    list or object opening, its text the bracket) or "end" ("]" or "}")."""
    stack: list[tuple[str, Iterator[tuple[str | None, Any]]]] = [("", iter([(None, value)]))]
    while stack:
        close, items = stack[-1]
        entry = next(items, None)
        if entry is None:
            stack.pop()
            if close:
                yield "end", close
            continue
        key, item = entry
        if key is not None:
            yield "key", _string(key)
        if isinstance(item, list):
            yield "start", "["
            stack.append(("]", ((None, v) for v in item)))
        elif isinstance(item, dict):
            yield "start", "{"
            stack.append(("}", iter(item.items())))
        else:
            yield "value", _scalar(item)


def debug_string(value: Any) -> str:
    """A JSON value as TF Serving prints it in errors (``JsonValueToDebugString``).

    rapidjson's ``PrettyWriter`` with ``kFormatSingleLineArray``: arrays on one line
    (``[1, 2]``), object members on lines of their own indented by four spaces per level. Each
    token is written only while fewer than 256 bytes are (so the last one may pass the mark), and
    the print stops at a NaN or infinity, as the bounded writer stops.
    """
    out: list[str] = []
    size = 0
    levels: list[list[Any]] = []  # [in an array, values written so far]
    for kind, text in _tokens(value):
        if size >= _MAX_DEBUG_BYTES:
            break
        piece = ""
        if kind == "end":
            opened = levels.pop()
            if opened[1] and not opened[0]:
                piece = "\n" + "    " * len(levels)
        elif levels:
            in_array, count = levels[-1]
            if in_array:
                piece = ", " if count else ""
            else:
                piece = (",\n" if count % 2 == 0 else ": ") if count else "\n"
                if count % 2 == 0:
                    piece += "    " * len(levels)
            levels[-1][1] += 1
        if text is None:  # NaN or an infinity: rapidjson writes the separator, then fails
            out.append(piece)
            break
        piece += text
        if kind == "start":
            levels.append([text == "[", 0])
        out.append(piece)
        size += len(piece.encode("utf-8", "surrogatepass"))
    return "".join(out)


_B64 = re.compile(r"([A-Za-z0-9+/ \t\n\v\f\r]*)((?:[=.][=. \t\n\v\f\r]*)?)")
_NOT_DATA = str.maketrans("", "", " \t\n\v\f\r")
_EXPECTED_PADDING = (0, -1, 2, 1)  # by data characters mod 4; one left over is an error


def b64_unescape(text: str) -> bytes | None:
    """``absl::Base64Unescape``: the standard alphabet; ASCII whitespace anywhere is skipped;
    the padding (``=`` or ``.``) may be left out, and if given must be complete; nothing but
    padding and whitespace may follow it. None when the text does not decode."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)  # the canonical form, in C
    except (binascii.Error, ValueError):
        pass
    match = _B64.fullmatch(text)
    if match is None:
        return None
    data = match[1].translate(_NOT_DATA)
    pads = match[2].count("=") + match[2].count(".")
    expected = _EXPECTED_PADDING[len(data) % 4]
    if expected < 0 or pads not in (0, expected):
        return None
    return binascii.a2b_base64(data + "=" * expected)
