"""The REST API on ``--rest_api_port`` (TF Serving's ``api_rest.md``), as an ASGI application.

``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` (status), ``…/metadata``,
``POST …:predict``, ``OPTIONS`` (CORS preflight); and the Prometheus metrics at the monitoring
config's path. With ``--rest_api_enable_cors_support`` the model API's responses carry TF
Serving's CORS headers. :mod:`serving.protocol.rest.server` serves it with uvicorn on the
server's event loop; :mod:`serving.protocol.rest.predict` runs the ``:predict`` calls. Every
request's body is read first, within the limits of :mod:`serving.protocol.rest.body`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.dataplane import SIGNATURE_DEF_FIELD, DataPlane
from serving.errors import ServingError, invalid, not_found
from serving.protocol.rest.body import (
    BodyBudget,
    BodyLease,
    BodyLimits,
    BodyRefused,
    ClientGone,
    read_body,
)
from serving.protocol.rest.predict import RestPredictor, Spec

# TF Serving's patterns (http_rest_api_util.cc), matched in full and case-insensitively: POST names
# a verb, GET a status or "/metadata". Any other path under /v1/ is a malformed request (400).
_POST_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_GET_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
_API_PREFIX = re.compile(r"/v1/", re.IGNORECASE)
_INT64_MAX = 2**63 - 1
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
_ORIGIN = re.compile(r"https?://")
_METRICS_TYPE = "text/plain; version=0.0.4"


def _parse(method: str, path: str) -> tuple[Spec, str] | None:
    """TF Serving's ``ParseModelInfo``: the spec and the verb or subresource, None when the path
    does not match the method's pattern. The model name and label are percent-decoded."""
    match = (_POST_PATH if method == "POST" else _GET_PATH).fullmatch(path)
    if match is None:
        return None
    name, version, label, rest = match.groups()
    number = None
    if version is not None:
        number = int(version)
        if number > _INT64_MAX:
            raise invalid(f"Failed to convert version: {version} to numeric.")
    spec = Spec(unquote(name or ""), number, unquote(label) if label is not None else None)
    return spec, rest or ""


def _malformed(method: str, path: str) -> ServingError:
    return invalid(f"Malformed request: {method} {path}")


def _to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _response(
    status: int,
    body: bytes,
    content_type: str,
    cors: bool,
    close: bool = False,
    retry_after: int | None = None,
) -> Response:
    """A response whose header names keep TF Serving's case where the HTTP layer keeps it (h11,
    with CORS support on; Starlette itself would lower them). ``close``: end the connection;
    ``retry_after``: seconds for a ``Retry-After`` header."""
    response = Response(body, status)
    names = [*(_CORS_HEADERS if cors else ()), ("Content-Type", content_type)]
    names.append(("Content-Length", str(len(body))))
    if retry_after is not None:
        names.append(("Retry-After", str(retry_after)))
    if close:
        names.append(("Connection", "close"))
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in names]
    return response


Handler = Callable[[Spec, str], Awaitable[tuple[str, Any]]]


class RestApi:
    """The ASGI application: one instance per model server.

    Args:
        data_plane: the model operations the routes translate to.
        predictor: runs the ``:predict`` calls.
        cors: answer with TF Serving's CORS headers (``--rest_api_enable_cors_support``).
        body_limits: the largest body read, how long it may take to arrive, and the bytes of
            bodies all requests hold at once.
    """

    def __init__(
        self,
        data_plane: DataPlane,
        predictor: RestPredictor,
        cors: bool,
        body_limits: BodyLimits | None = None,
    ) -> None:
        self.data_plane = data_plane
        self.predictor = predictor
        self.cors = cors
        self.body_limits = body_limits or BodyLimits()
        self.body_budget = BodyBudget(self.body_limits.max_bytes_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket handling: uvicorn runs with lifespan "off"
        lease = self.body_budget.lease()
        try:
            response = await self._respond(scope, receive, lease)
        finally:
            # The body's bytes leave the budget once the answer is built, before it is written:
            # a client that does not read its answers (the write waits for it, up to the
            # write timeout of serving.protocol.rest.guard) would otherwise hold them, and with
            # pipelined requests a fresh part of the budget, for as long as it stays connected.
            lease.release()
        if response is not None:
            await response(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive, lease: BodyLease) -> Response | None:
        """The answer to a request whose body is read into ``lease`` (None: the client left);
        the body is dropped when this returns."""
        try:
            raw = await read_body(scope, receive, self.body_limits, lease)
        except ClientGone:
            return None
        except BodyRefused as refused:
            body = json.dumps({"error": refused.message}).encode()
            return _response(
                refused.status, body, "application/json", self.cors, True, refused.retry_after
            )
        request = Request(scope, receive)
        # The request target as sent, not percent-decoded, as TF Serving matches it.
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        method = scope["method"]
        if method == "GET":
            response = await self._get(path)
        elif method == "POST":
            query = scope.get("query_string", b"").decode("latin-1")
            target = f"{path}?{query}" if query else path
            response = await self._post(raw, path, target)
        elif method == "OPTIONS":
            response = self._options(request, path)
        elif _API_PREFIX.match(path):
            response = self._error(_malformed(method, path))
        else:
            response = self._error(not_found(f"Not found: {method} {path}"))
        return response

    # --- responses ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> Response:
        return _response(status, body, content_type, self.cors)

    def _json(self, status: int, payload: Any) -> Response:
        # One line: with ``indent`` the json module drops to its pure-Python encoder, which cost
        # 7x the C encoder's time on a 10-class predict answer (TF Serving pretty-prints; the
        # whitespace carries no meaning).
        return self._send(status, json.dumps(payload).encode())

    def _error(self, error: ServingError) -> Response:
        return self._json(error.http_status, {"error": error.message})

    async def _answer(self, method: str, path: str, shown: str, handle: Handler) -> Response:
        """Answer a model API request with ``handle(spec, rest)`` -> (API name, JSON payload),
        recorded as TF Serving records REST requests: counted by status, timed when OK.
        ``shown``: the path as the malformed-request error names it."""
        start = time.perf_counter()
        status, model, api = "OK", "", ""
        try:
            if not _API_PREFIX.match(path):
                raise not_found(f"Not found: {method} {shown}")
            parsed = _parse(method, path)
            if parsed is None:
                raise _malformed(method, shown)
            spec, rest = parsed
            if not spec.name:
                raise invalid("Missing model name in request.")
            model = spec.name
            api, payload = await handle(spec, rest)
            if isinstance(payload, bytes):  # already JSON: a :predict answer, encoded off the loop
                return self._send(200, payload)
            return self._json(200, payload)
        except ServingError as error:
            status = error.code.name
            return self._error(error)
        except Exception as error:
            status = "INTERNAL"
            return self._json(500, {"error": f"{type(error).__name__}: {error}"})
        finally:
            if model:
                elapsed = time.perf_counter() - start
                self.data_plane.record(model, api, "REST", status, elapsed)

    # --- methods --------------------------------------------------------------------------------
    async def _get(self, raw_path: str) -> Response:
        data_plane = self.data_plane
        path = raw_path.split("?", 1)[0]
        if data_plane.metrics_path and path == data_plane.metrics_path:
            return _response(200, data_plane.exposition(), _METRICS_TYPE, cors=False)

        async def get(spec: Spec, rest: str) -> tuple[str, Any]:
            # TF Serving compares the subresource exactly: "/METADATA" asks for the status.
            if rest == "metadata":
                return "metadata", self._metadata(spec)
            response = data_plane.status(spec.name, spec.version)
            return "", _to_dict(response)

        return await self._answer("GET", path, path, get)

    def _metadata(self, spec: Spec) -> dict[str, Any]:
        servable = self.data_plane.resolve(spec.name, spec.version, spec.label)
        try:
            response = self.data_plane.metadata(servable, [SIGNATURE_DEF_FIELD])
        finally:
            servable.release()
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
        return {
            "model_spec": {
                "name": response.model_spec.name,
                "signature_name": "",
                "version": str(response.model_spec.version.value),
            },
            "metadata": {"signature_def": _to_dict(signatures)},
        }

    async def _post(self, raw: bytes, path: str, target: str) -> Response:
        async def post(spec: Spec, rest: str) -> tuple[str, Any]:
            # The verb is matched case-insensitively but compared exactly (":PREDICT": 400).
            if rest in ("classify", "regress"):
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{rest} is not implemented by fdl-model-server; use :predict",
                )
            if rest != "predict":
                raise _malformed("POST", target)
            return "predict", await self.predictor.predict(spec, raw)

        return await self._answer("POST", path, target, post)

    def _options(self, request: Request, path: str) -> Response:
        """A CORS preflight: answered for any model API path that names an http(s) Origin."""
        try:
            if _parse("POST", path) is None and _parse("GET", path) is None:
                raise not_found(f"Malformed request: {path}")
            if not _ORIGIN.search(request.headers.get("Origin", "")):
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Origin header is missing in CORS preflight",
                )
            return self._send(200, b"")
        except ServingError as error:
            return self._error(error)
