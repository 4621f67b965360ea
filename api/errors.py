"""One error shape for every failure: ``{"error": {"code", "message"}}`` with the right status."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from api.json_body import JsonBodyError, explain, parse_json

# Seconds a client should wait before retrying a request that found Redis (the job store) down.
STORE_RETRY_AFTER_S = 2


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def store_unavailable(error: Exception) -> ApiError:
    """503 + Retry-After for any request that needed Redis while it was unreachable."""
    return ApiError(
        503,
        "job_store_unavailable",
        f"the job store (Redis) is unavailable ({type(error).__name__}); retry shortly",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


def store_busy(what: str, waited_s: float) -> ApiError:
    """503 + Retry-After for a request that waited ``waited_s`` for a lock in the job store
    (``what`` names it) that others held all along."""
    return ApiError(
        503,
        "job_store_busy",
        f"{what} stayed taken for {waited_s:g}s by other requests; retry shortly",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


# Validation errors a 422 names, in its message and in its details; the rest are counted
# ("and 4980 more"), so the answer stays small whatever the body (a JSON object of thousands of
# unknown keys is an error per key).
MAX_VALIDATION_ERRORS = 20


def _field(error: Any) -> str:
    if error.get("type") == "json_invalid":
        return "body"  # its loc is ("body", the character's offset)
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body")


def _message(error: Any) -> str:
    if error.get("type") == "json_invalid":
        # FastAPI's own words are "JSON decode error", with the offset as the field.
        offset = error.get("loc", ("body", "?"))[-1]
        reason = (error.get("ctx") or {}).get("error")
        return f"not valid JSON at character {offset}" + (f" ({reason})" if reason else "")
    return str(error.get("msg", "invalid"))


def validation_error(errors: Sequence[Any]) -> ApiError:
    """422 ``invalid_request`` naming the first MAX_VALIDATION_ERRORS of ``errors`` (pydantic's
    error dicts) in its message and details, and counting the rest in the message."""
    shown = errors[:MAX_VALIDATION_ERRORS]
    # An error of the whole body (missing, or not an object) has no field of its own: both the
    # message and the details name it "body".
    named = [(_field(e) or "body", _message(e)) for e in shown]
    message = "; ".join(f"{field}: {text}" for field, text in named)
    if len(errors) > len(shown):
        message += f"; and {len(errors) - len(shown)} more ({len(errors)} errors in all)"
    details = [{"field": field, "message": text} for field, text in named]
    return ApiError(422, "invalid_request", message, details=details)


def json_body_refusal(error: JsonBodyError) -> ApiError:
    """A keyed JSON route's answer to a body :func:`api.json_body.parse_json` refuses: 400
    ``json_too_deep`` (as a classify body's), else 422 ``invalid_request`` naming the field as
    its syntax errors do (``body``, or the key given twice)."""
    if error.kind == "too_deep":
        return ApiError(400, "json_too_deep", error.message)
    details = [{"field": error.field, "message": error.reason}]
    return ApiError(422, "invalid_request", f"{error.field}: {error.reason}", details=details)


async def _body_parse_refusal(request: Request, error: StarletteHTTPException) -> ApiError | None:
    """FastAPI's 400 "There was an error parsing the body" for a JSON body ``json.loads`` raised
    on, other than a syntax error (nested past the recursion limit, an integer of more than 4300
    digits, not UTF-8), told as :func:`json_body_refusal` tells it; None for any other 400."""
    cause = error.__cause__
    if error.status_code != 400 or not isinstance(cause, RecursionError | ValueError):
        return None
    try:
        body = await request.body()  # read already: FastAPI's parse failed on it
    except Exception:  # any failure to read it: the plain 400 stands
        return None
    if isinstance(cause, RecursionError):
        return json_body_refusal(explain(cause, body))
    try:
        parse_json(body)
    except JsonBodyError as refused:
        return json_body_refusal(refused)
    return None  # a ValueError of something else than the body's JSON


# The methods a 405's Allow header may name.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


# Paths whose Allow list is known: trying every method through the routes costs ~0.3 ms, and any
# client can ask for 405s. Bounded, oldest dropped first, since paths come from clients.
_ALLOWED_CACHE: OrderedDict[tuple[int, str, str], list[str]] = OrderedDict()
_ALLOWED_CACHE_SIZE = 256


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path: Starlette's 405 names only those of
    the first route whose path matches (``PUT /v1/jobs`` said ``Allow: POST``). Each method is
    tried through the app's own matching (included routers, api/routers/models.py's custom
    methods); mounts, which take any method, are left out. Matching depends on the path alone,
    so the answer is kept per path."""
    key = (id(request.app), request.scope.get("root_path", ""), request.scope["path"])
    if (cached := _ALLOWED_CACHE.get(key)) is not None:
        _ALLOWED_CACHE.move_to_end(key)
        return cached
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    _ALLOWED_CACHE[key] = allowed
    if len(_ALLOWED_CACHE) > _ALLOWED_CACHE_SIZE:
        _ALLOWED_CACHE.popitem(last=False)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(error.code, error.message, error.details),
            status_code=error.status,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return await _api_error(request, validation_error(error.errors()))

    @app.exception_handler(RedisError)
    async def _store_down(request: Request, error: RedisError) -> JSONResponse:
        # Any route that reads or writes jobs while Redis is down: a retryable 503, not a 500.
        logging.getLogger("fdl.gateway").warning(
            "job store unavailable on %s %s: %s",
            request.method,
            request.url.path,
            type(error).__name__,
        )
        return await _api_error(request, store_unavailable(error))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logging.getLogger("fdl.gateway").exception("unhandled error: %s", type(error).__name__)
        # This handler runs outside the middleware that adds the request id (and nosniff, and
        # no-store for keyed requests) to every answer (Starlette's ServerErrorMiddleware is
        # outermost): they are added here, the id named in the message too, so that the log
        # line of this very error can be found.
        request_id = getattr(request.state, "request_id", None)
        where = f" (request id {request_id})" if request_id else ""
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
        return JSONResponse(
            error_body(
                "internal_error", f"an unexpected error occurred; see the gateway log{where}"
            ),
            status_code=500,
            headers={**headers, "x-request-id": request_id} if request_id else headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if (refusal := await _body_parse_refusal(request, error)) is not None:
            return await _api_error(request, refusal)
        code = {
            400: "bad_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
        }.get(error.status_code, "http_error")
        headers = getattr(error, "headers", None)
        if error.status_code == 405 and headers and "Allow" in headers:
            # Every route's methods at the path; a static mount's 405 (no route there) keeps
            # the `Allow: GET, HEAD` StaticFiles sent.
            headers = {**headers, "Allow": ", ".join(allowed_methods(request)) or headers["Allow"]}
        return JSONResponse(
            error_body(code, str(error.detail)),
            status_code=error.status_code,
            headers=headers,
        )
