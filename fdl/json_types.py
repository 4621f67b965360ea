"""Pydantic validators that take a value only in its JSON type: an integer as a JSON integer
(not "2_0", 2.0 or true), a float as a JSON number (an integer too: JSON has one number type,
never a string or a boolean), a boolean as JSON true or false (not "yes" or 1).

Pydantic's lax mode reads "2_0" as 20 and "yes" as true; strict mode refuses them but says only
"Input should be a valid integer". These say what was given ("expected a JSON integer, got the
string '2_0'"), under pydantic's own error types (int_type, float_type, bool_type). Field
constraints (ge, le) still apply after them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

# The most of a string's characters or an integer's digits that a message repeats: the body may
# hold megabytes.
_SHOWN = 40


def described(value: Any) -> str:
    """What ``value`` is, in JSON's words: "the string '2_0'", "the number 2.0", "true"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > _SHOWN:
            return f"the string {value[:_SHOWN]!r}… ({len(value)} characters)"
        return f"the string {value!r}"
    if isinstance(value, int):
        # Compared, not written out: str() refuses an integer of over 4300 digits.
        if abs(value) >= 10**_SHOWN:
            return f"an integer of more than {_SHOWN} digits"
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _refused(kind: str, expected: str, value: Any) -> PydanticCustomError:
    got = described(value)
    return PydanticCustomError(
        kind, "expected {expected}, got {got}", {"expected": expected, "got": got}
    )


def _json_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _refused("int_type", "a JSON integer", value)


def _json_float(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _refused("float_type", "a JSON number", value)


def _json_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    raise _refused("bool_type", "JSON true or false", value)


# Each goes after the field's constraints, Annotated[int, Field(ge=1), JSON_INT]: put before
# them, the JSON schema would show "ge" and "le" where OpenAPI needs "minimum" and "maximum".
JSON_INT = BeforeValidator(_json_int)
JSON_FLOAT = BeforeValidator(_json_float)
JSON_BOOL = BeforeValidator(_json_bool)
