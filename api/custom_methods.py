"""Custom methods in paths (``/v1/models/{model}:classify``, ``…/labels/{label}:rollback``, the
UI's ``{model}:preprocess``), told by the path as the client sent it.

Starlette matches routes against the percent-decoded path, in which ``stable%3Arollback`` reads
as ``stable:rollback``. RFC 3986 (§2.2) says otherwise: ``:`` is a delimiter only as itself,
``%3A`` is data. So ``POST …/labels/stable%3Arollback`` is the label named ``stable:rollback``
(a name refused with 422), not a rollback of ``stable``: a proxy or policy that tells the
custom method by the literal colon must see what the gateway does. The action after a literal
colon may still spell its letters encoded (``:%72ollback``): they are unreserved characters,
the same either way.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

# The custom methods routes append to a model's or a label's path segment;
# tests/api/test_request_strictness.py checks that this lists every one the app has.
ACTIONS = ("classify", "preprocess", "rollback")
_ACTION = re.compile(rf":({'|'.join(ACTIONS)})$")


def route_action(path: str) -> str | None:
    """The custom method a route's path template ends with, or None."""
    found = _ACTION.search(path)
    return found.group(1) if found else None


def action_of(scope: Scope) -> str | None:
    """The custom method the request's path ends with: one of ACTIONS after the last literal
    ``:`` of its last segment in ``scope["raw_path"]`` (the decoded path without one), or None."""
    raw = scope.get("raw_path")
    path = scope["path"] if raw is None else raw.decode("latin-1")
    segment = path.rpartition("/")[2]
    _, colon, action = segment.rpartition(":")
    if not colon:
        return None
    action = unquote(action) if "%" in action else action
    return action if action in ACTIONS else None


class ActionRoute(APIRoute):
    """A route that matches a request only when both end with the same custom method (or
    neither does), as the raw path says: ``GET /v1/models/promo:classify`` is the classify route
    asked with the wrong method (405, ``Allow: POST``), not a model named "promo:classify" (a 422
    for its name); ``…/labels/stable%3Arollback`` is a label's path, not the rollback's."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if action_of(scope) != route_action(self.path):
            return Match.NONE, {}
        return super().matches(scope)
