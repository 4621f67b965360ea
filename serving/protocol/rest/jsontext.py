"""JSON text as TF Serving's REST layer reads and prints it (``json_tensor.cc`` on rapidjson).

- :func:`parse_document`: a request body. TF Serving parses with ``kParseStopWhenDoneFlag``, so
  whatever follows the first complete JSON value is never read: ``{"instances": [1]} xyz`` is
  the request ``{"instances": [1]}``. Nor does it pass ``kParseValidateEncodingFlag``: a string
  holding bytes that are not UTF-8 keeps them (:mod:`serving.protocol.rest.rawtext`).
- :func:`debug_string`: a value in an error message, as ``JsonValueToDebugString`` prints it
  (rapidjson's ``PrettyWriter`` with single-line arrays, cut once 256 bytes are written).
- :func:`type_name`: ``JsonTypeString``, the JSON type an error names.
"""

from __future__ import annotations

import gc
import json
import math
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from serving.errors import invalid
from serving.protocol.rest.rawtext import has_bytes, keep_bytes


def _finite_float(text: str) -> float:
    """A JSON number written with a fraction or an exponent; one beyond a double's range is a
    parse error, as rapidjson's (``NaN`` and ``Infinity`` spelled out are constants, not this)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double")
    return value


_MAX_DOUBLE_INT = int(sys.float_info.max)
_MAX_DOUBLE_DIGITS = len(str(_MAX_DOUBLE_INT))  # 309


def _integer(text: str) -> int:
    """A JSON number written as an integer. rapidjson reads one past uint64 as a double, so one
    beyond a double's range is the same parse error as ``1e400`` (and is never handed to
    ``int()``, which refuses more than 4300 digits with a text naming a Python setting)."""
    digits = len(text) - text.startswith("-")
    if digits > _MAX_DOUBLE_DIGITS or (
        digits == _MAX_DOUBLE_DIGITS and abs(int(text)) > _MAX_DOUBLE_INT
    ):
        raise ValueError("Number too big to be stored in double")
    return int(text)


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_int=_integer)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON whitespace


# A body this large may hold millions of lists; the garbage collector is paused while they are
# made (below).
_PAUSE_GC_BYTES = 64 * 1024


def _parse_large(raw: bytes) -> Any:
    """``orjson.loads`` with Python's cyclic garbage collector paused.

    Each container the parser makes counts towards the next collection, and the collections
    walk every container alive: a 34 MB body of nested lists (100,000 8x8x1 images) took 3.7 s
    to parse with the collector on and 0.6 s with it off. The parser holds the GIL throughout, so
    those seconds stopped every other request too, gRPC included. A parse makes no garbage
    cycles, so nothing is left for the collector. Calls on other threads at once: the collector
    is on again when the call that paused it returns (the others' parses may then be slower).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(raw)
    finally:
        if was_enabled:
            gc.enable()


def parse_document(raw: bytes) -> Any:
    """The first JSON value of a body; bytes after it are ignored, as TF Serving ignores them.

    orjson reads strict JSON (the common case); anything else goes to Python's parser, which also
    reads ``NaN`` and ``Infinity`` (as TF Serving's reader does) and UTF-16, and words the error.
    Bytes that are not UTF-8 are kept in the strings that hold them (``rawtext.RawString``), and
    refused elsewhere, as rapidjson keeps and refuses them.
    """
    try:
        if len(raw) < _PAUSE_GC_BYTES:
            return orjson.loads(raw or b"null")
        return _parse_large(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        encoding = json.detect_encoding(raw)
        # Bytes that are not UTF-8 become lone surrogates, read back by keep_bytes; after the
        # document they are never read.
        text = raw.decode(encoding, "surrogateescape" if encoding == "utf-8" else "strict")
        start = _SPACE.match(text).end()  # type: ignore[union-attr]
        value, end = _DECODER.raw_decode(text, start)
        if encoding != "utf-8":
            text[:end].encode(encoding)  # the document itself must be valid text
        elif has_bytes(text, end):
            value = keep_bytes(value)
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
