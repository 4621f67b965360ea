"""Preconditions of the label changes (RFC 9110, section 13: conditional requests).

A label (``/v1/models/{model}/labels/{label}``) is a resource whose entity tag is the version it
points at, ``"3"``: the promotion and rollback answers carry it as ``ETag``, and ``GET
/v1/models/{model}`` lists every label's version. A change may send

- ``If-Match: "3"`` (or a list, ``"3", "4"``): the label must point at one of those versions now.
  Only strong tags match (If-Match compares strongly): ``W/"3"`` is taken and never matches;
- ``If-Match: *``: the label must exist;
- ``If-None-Match: *``, on ``POST …/labels/{label}`` only: the label must not exist (create only).

The promoter checks it under the repository's lock, against the labels it read there
(:meth:`api.promotion.Promoter.set_label`), so nothing changes between the check and the write,
through this gateway or another. A condition that does not hold is 412 ``precondition_failed``,
nothing changed, with the label's ``ETag`` when it exists; a header that cannot be read, or one
that means nothing on the route, is 422 ``invalid_if_match`` / ``invalid_if_none_match`` (as the
Idempotency-Key and Last-Event-ID headers are refused), before the lock is waited for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request

from api.errors import ApiError
from fdl.repository_files import Labels

IF_MATCH = "If-Match"
IF_NONE_MATCH = "If-None-Match"
# All the field lines of one header together, and the entity tags they list.
MAX_LENGTH = 1024
MAX_TAGS = 32
# A version as the label's entity tag writes it: no sign, no leading zero, at most 18 digits (as
# publishes name versions; docs/gateway.md).
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
# One list element: *, or an entity tag (RFC 9110: [W/] DQUOTE *etagc DQUOTE).
_ELEMENT = re.compile(r'\*|(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_OWS = " \t"
_SHOWN = 40  # characters of a bad element quoted in a message


@dataclass(frozen=True)
class Precondition:
    """What a change expects of the label: ``exists`` (``If-Match: *``), one of ``versions``
    (``If-Match`` with tags; ``weak`` when some were weak and so left out), or ``absent``
    (``If-None-Match: *``)."""

    exists: bool = False
    versions: tuple[int, ...] = ()
    weak: tuple[str, ...] = ()
    absent: bool = False

    def holds(self, current: int | None) -> bool:
        if self.absent:
            return current is None
        if self.exists:
            return current is not None
        return current in self.versions

    def check(self, model: str, label: str, current: int | None) -> None:
        """Nothing when it holds for the label's ``current`` version (None: no such label);
        else 412 ``precondition_failed`` saying what the label is and what was expected."""
        if self.holds(current):
            return
        now = (
            f"model {model} has no label {label!r}"
            if current is None
            else f"label {label!r} of model {model} points at version {current} now"
        )
        raise ApiError(
            412,
            "precondition_failed",
            f"{now}, where {self._expected()}; nothing was changed",
            headers=None if current is None else {"ETag": etag(current)},
            details={"label": label, "version": current},
        )

    def _expected(self) -> str:
        if self.absent:
            return f"{IF_NONE_MATCH}: * expected no such label"
        if self.exists:
            return f"{IF_MATCH}: * expected it to exist"
        if not self.versions:
            return (
                f"{IF_MATCH} sent only weak entity tags ({', '.join(self.weak)}), which never "
                'match: If-Match compares strongly, send "N"'
            )
        listed = " or ".join(str(v) for v in self.versions)
        weak = f" (its weak tags {', '.join(self.weak)} never match)" if self.weak else ""
        return f"{IF_MATCH} expected version {listed}{weak}"


# A change's precondition, or None without one.
Expected = Precondition | None


def check(expect: Expected, model: str, label: str, labels: Labels) -> None:
    """412 unless ``expect`` (None: no precondition) holds for ``label`` of ``model`` in
    ``labels``, as the promoter read them under the lock."""
    if expect is not None:
        expect.check(model, label, labels.get(model, {}).get(label))


def etag(version: int) -> str:
    """The label's entity tag: its version, quoted (a strong tag)."""
    return f'"{version}"'


IfMatch = Annotated[
    str | None,
    Header(
        alias=IF_MATCH,
        description='Change the label only if it points at one of these versions now: `"3"` '
        "(a strong entity tag: the version as the label's ETag and GET /v1/models/{model} give "
        'it), a list `"3", "4"`, or `*` (only if the label exists). Weak tags (`W/"3"`) never '
        f"match. At most {MAX_TAGS} tags and {MAX_LENGTH} characters. Otherwise 412 "
        "`precondition_failed`, nothing changed.",
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias=IF_NONE_MATCH,
        description="`*`: set the label only if it does not exist yet (create only), else 412 "
        "`precondition_failed`, nothing changed. Not with If-Match.",
    ),
]


def precondition_of(request: Request, create: bool) -> Precondition | None:
    """The request's precondition (None without one); ``create``: the route takes
    ``If-None-Match: *`` (setting a label), the others refuse If-None-Match (a rollback or a
    removal needs the label to exist: it would never hold). 422 for a header that cannot be
    read, too long, of too many tags, or both headers at once."""
    none_match = request.headers.getlist(IF_NONE_MATCH)
    match = request.headers.getlist(IF_MATCH)
    if none_match:
        if not create:
            raise _invalid(
                IF_NONE_MATCH,
                "means nothing here: the label must exist to be rolled back or removed; send "
                'If-Match: "N" (or *) instead',
                syntax=False,
            )
        if match:
            raise _invalid(IF_NONE_MATCH, f"cannot be sent with {IF_MATCH}: send one", False)
        elements = _elements(IF_NONE_MATCH, none_match)
        if elements != ["*"]:
            raise _invalid(
                IF_NONE_MATCH,
                "takes only * here (set the label only if it does not exist)",
                syntax=False,
            )
        return Precondition(absent=True)
    if not match:
        return None
    elements = _elements(IF_MATCH, match)
    if "*" in elements:
        if len(elements) > 1:
            raise _invalid(IF_MATCH, "lists * with entity tags: send * alone, or tags only")
        return Precondition(exists=True)
    versions: list[int] = []
    weak: list[str] = []
    for element in elements:
        is_weak = element.startswith("W/")
        opaque = element[3:-1] if is_weak else element[1:-1]
        if not _VERSION.fullmatch(opaque):
            raise _invalid(
                IF_MATCH, f"holds the entity tag {_shown(element)}, which names no version"
            )
        if is_weak:
            weak.append(element)
        elif int(opaque) not in versions:
            versions.append(int(opaque))
    return Precondition(versions=tuple(versions), weak=tuple(weak))


def _elements(name: str, lines: list[str]) -> list[str]:
    """The non-empty elements of a list header's field lines (RFC 9110 5.6.1: empty ones are
    ignored), each ``*`` or an entity tag as sent."""
    length = sum(map(len, lines)) + len(lines) - 1
    if length > MAX_LENGTH:
        raise _invalid(name, f"is {length} characters long (at most {MAX_LENGTH})")
    text = ",".join(lines)
    found: list[str] = []
    at = 0
    while at < len(text):
        while at < len(text) and text[at] in _OWS:
            at += 1
        if at < len(text) and text[at] == ",":
            at += 1
            continue
        if at == len(text):
            break
        element = _ELEMENT.match(text, at)
        end = element.end() if element else at
        while end < len(text) and text[end] in _OWS:
            end += 1
        if element is None or (end < len(text) and text[end] != ","):
            bad = text[at:].split(",", 1)[0].strip(_OWS)
            raise _invalid(name, f"holds {_shown(bad)} at character {at + 1}, no entity tag")
        found.append(element.group(0))
        if len(found) > MAX_TAGS:
            raise _invalid(name, f"lists more than {MAX_TAGS} entity tags")
        at = end
    if not found:
        raise _invalid(name, "is empty")
    return found


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else f"{text[:_SHOWN]}…")


def _invalid(name: str, what: str, syntax: bool = True) -> ApiError:
    """422 ``invalid_if_match`` / ``invalid_if_none_match``; ``syntax``: say how to write it."""
    how = (
        '. Write the label\'s version as a quoted entity tag, "3" (several: "3", "4"), or * '
        f"({IF_MATCH}: the label exists; {IF_NONE_MATCH}: it does not)"
    )
    code = f"invalid_{name.lower().replace('-', '_')}"
    return ApiError(422, code, f"{name} {what}{how if syntax else ''}")


# The header of a label change's answer, in the route's OpenAPI document.
ETAG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {
                "description": 'The version the label points at now, quoted (`"3"`), for If-Match',
                "schema": {"type": "string", "pattern": '^"[1-9][0-9]*"$'},
            }
        }
    }
}
