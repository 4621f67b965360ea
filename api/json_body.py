"""The gateway's one reading of a JSON request body, shared by the classify body
(:mod:`api.bodies`) and the keyed JSON routes (``POST /v1/jobs``, ``POST …/labels/{label}``).

``json.loads`` as FastAPI and Starlette call it, with the same encoding rules (UTF-8, or UTF-16
or UTF-32 as ``json.detect_encoding`` tells, a UTF-8 BOM skipped, lone surrogates passed), plus
two rules of its own: an object may give each key once (RFC 8259 §4 leaves duplicates' meaning to
each reader: Python keeps the last, a proxy or audit log reading the first would see another
request), and every refusal says what was wrong and where: the byte that is not UTF-8, the
integer over Python's 4300-digit limit, how deep the nesting goes, the key given twice.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any


class JsonBodyError(Exception):
    """A body the gateway does not take as JSON. ``kind`` is ``not_json`` (syntax, encoding, an
    integer too long), ``too_deep`` or ``duplicate_key``; ``message`` says what and where;
    ``field`` names what was wrong as a 422's details do (``body``, or the path of the key given
    twice, dotted: ``model``, ``params.lr``, ``instances.0.b64``) and ``reason`` says it after
    that name (``body: not valid JSON: …``)."""

    def __init__(self, kind: str, message: str, field: str = "body", reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.reason = reason or message


def _not_json(reason: str) -> JsonBodyError:
    return JsonBodyError("not_json", f"the body is {reason}", reason=reason)


def parse_json(body: bytes) -> Any:
    """The body's JSON value, each object's keys unique.

    Raises:
        JsonBodyError: for a body that is not JSON, nested past the parser's limit, or with an
            object that gives a key more than once.
    """
    try:
        text = body.decode(_encoding(body), "surrogatepass")
    except UnicodeDecodeError as error:
        raise explain(error, body) from error
    try:
        return _UNIQUE.decode(text)
    except _DuplicateKey:
        pass  # told below, unless the body breaks further on
    except (RecursionError, ValueError) as error:
        raise explain(error, text) from error
    # A refusal's cost only: parsed again, keeping every object, to say which key and where.
    try:
        marked = _MARKING.decode(text)
    except (RecursionError, ValueError) as error:
        raise explain(error, text) from error
    raise _duplicate(marked)


def explain(error: BaseException, body: bytes | str) -> JsonBodyError:
    """What ``json.loads`` failing with ``error`` on ``body`` (the bytes or their text) means
    for the client: for FastAPI's own parse of a route's body too, whose error says nothing."""
    if isinstance(error, UnicodeDecodeError):
        encoding = "UTF-8" if error.encoding.startswith("utf-8") else error.encoding.upper()
        byte = error.object[error.start]
        return _not_json(
            f"not {encoding} at byte offset {error.start} (0x{byte:02X}: {error.reason}); "
            "send JSON in UTF-8"
        )
    text = body if isinstance(body, str) else body.decode(_encoding(body), "surrogatepass")
    if isinstance(error, RecursionError):
        return JsonBodyError("too_deep", f"the JSON body is {_too_deep(text)}")
    if isinstance(error, json.JSONDecodeError):
        return _not_json(f"not valid JSON: {error}")
    return _not_json(f"not valid JSON: {_long_integer(text) or error}")


def position(text: str, index: int) -> str:
    """``line L, column C (character N)`` of ``text[index]``, as ``json`` counts them."""
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    return f"line {line}, column {column} (character {index})"


class _DuplicateKey(Exception):
    pass


class _Marked(dict[str, Any]):
    """An object that gave ``key`` ``times`` times (kept with its last value)."""

    key: str
    times: int


def _encoding(body: bytes) -> str:
    return json.detect_encoding(body)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        raise _DuplicateKey
    return found


def _marking(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    counts = Counter(key for key, _ in pairs)
    marked = _Marked(found)
    marked.key = next(key for key, _ in pairs if counts[key] > 1)
    marked.times = counts[marked.key]
    return marked


# As json.loads builds them (a text's BOM is already gone with the UTF-8-SIG codec).
_UNIQUE = json.JSONDecoder(object_pairs_hook=_unique)
_MARKING = json.JSONDecoder(object_pairs_hook=_marking)


def _duplicate(parsed: Any) -> JsonBodyError:
    """The first object (outermost first, in the body's order) that gives a key twice."""
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(parsed, ())]
    while todo:
        value, path = todo.pop()
        if isinstance(value, _Marked):
            field = ".".join(str(step) for step in (*path, value.key))
            where = f"the object at {'.'.join(map(str, path))}" if path else "the top-level object"
            said = f"{value.times} times in {where}; send each key once (readers differ on which"
            return JsonBodyError(
                "duplicate_key",
                f"the JSON body gives the key {value.key!r} {said} one counts)",
                field,
                f"given {said} one counts)",
            )
        if isinstance(value, dict):
            todo.extend((item, (*path, key)) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            todo.extend((item, (*path, index)) for index, item in reversed(list(enumerate(value))))
    return JsonBodyError("duplicate_key", "the JSON body gives a key twice; send each key once")


def _too_deep(text: str) -> str:
    """Where the body's arrays and objects nest past Python's recursion limit (or, if the parse
    stopped short of it, how deep they go): one step per bracket, a refusal's cost only."""
    limit = sys.getrecursionlimit()
    depth = deepest = at = 0
    for match in _outside_strings(text, r"[\[\]{}]"):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, match.start()
                if depth > limit:
                    break
        else:
            depth -= 1
    return (
        f"nested too deeply: arrays and objects {deepest} levels deep at {position(text, at)}; "
        f"the parser stops at about {limit} (Python's recursion limit)"
    )


def _long_integer(text: str) -> str | None:
    """The integer over Python's int-string limit (4300 digits) that failed the parse, or None."""
    limit = sys.get_int_max_str_digits()
    if not limit:
        return None
    # Digits after a letter, digit, point, sign or "e" are no integer's first (a fraction, an
    # exponent, a string's text); after them, no point, exponent or digit.
    integer = rf"(?<![\w.+-])-?\d{{{limit + 1},}}(?![.eE\d])"
    for match in _outside_strings(text, integer):
        digits = len(match.group().lstrip("-"))
        return (
            f"an integer of {digits} digits at {position(text, match.start())}; integers may "
            f"have at most {limit} digits"
        )
    return None


def _outside_strings(text: str, wanted: str) -> Iterator[re.Match[str]]:
    """The matches of ``wanted`` (a pattern that matches no quote or backslash) outside the JSON
    strings of ``text``: each quote, escape and match is one step, so the scan stays linear
    whatever the text (a pattern for whole strings backtracks over every unclosed quote)."""
    in_string = False
    for match in re.finditer(rf'\\.|"|{wanted}', text, re.DOTALL):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif not in_string and token[0] != "\\":
            yield match
