"""Base64 as TF Serving's REST API reads it (``absl::Base64Unescape``), for the model server's
REST ``{"b64": ...}`` values and the gateway's JSON image bodies alike."""

from __future__ import annotations

import binascii
import re

_B64 = re.compile(r"([A-Za-z0-9+/ \t\n\v\f\r]*)((?:[=.][=. \t\n\v\f\r]*)?)")
_NOT_DATA = str.maketrans("", "", " \t\n\v\f\r")
_EXPECTED_PADDING = (0, -1, 2, 1)  # by data characters mod 4; one left over is an error


def b64_unescape(text: str) -> bytes | None:
    """``absl::Base64Unescape``: the standard alphabet; ASCII whitespace anywhere is skipped
    (``base64`` wraps lines at 76); the padding (``=`` or ``.``) may be left out, and if given
    must be complete; nothing but padding and whitespace may follow it. None when the text does
    not decode."""
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
