"""The REST API on ``--rest_api_port`` (TF Serving's ``api_rest.md``), on a threaded stdlib server.

``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` (status), ``…/metadata``,
``POST …:predict``, ``OPTIONS`` (CORS preflight); and the Prometheus metrics at the monitoring
config's path. With ``--rest_api_enable_cors_support`` the model API's responses carry TF
Serving's CORS headers.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from serving.errors import ServingError, invalid, not_found
from serving.grpc_api import metadata_response, status_response
from serving.predict import run_arrays
from serving.rest_codec import format_outputs, parse_predict_body

if TYPE_CHECKING:
    from serving.server import ModelServer

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:[a-zA-Z]+)?/?$"
)
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)
_ORIGIN = re.compile(r"https?://")


@dataclass(frozen=True)
class _Spec:
    name: str
    version: int | None
    label: str | None


def _parse(path: str) -> tuple[_Spec, str]:
    match = _PATH.match(path)
    if match is None:
        raise not_found(f"Malformed request: {path}")
    version = match["version"]
    if version is not None and not version.isdigit():
        raise invalid(f"version must be an integer, got {version!r}")
    spec = _Spec(match["name"], int(version) if version is not None else None, match["label"])
    return spec, match["rest"] or ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", api: bool = True
    ) -> None:
        self.send_response(status)
        if api and self.server.cors:
            for name, value in _CORS_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload, indent=1).encode())

    def _error(self, error: ServingError) -> None:
        self._json(error.http_status, {"error": error.message})

    def do_GET(self) -> None:
        model_server = self.server.model_server
        path = self.path.split("?", 1)[0]
        if model_server.metrics_path and path == model_server.metrics_path:
            metrics = model_server.metrics.exposition()
            self._send(200, metrics, "text/plain; version=0.0.4", api=False)
            return
        self._answer(path, self._get)

    def _get(self, spec: _Spec, rest: str) -> tuple[str, Any]:
        if rest == "":
            model_server = self.server.model_server
            response = status_response(model_server, spec.name, spec.version, spec.label)
            return "", _to_dict(response)
        if rest == "/metadata":
            return "metadata", self._metadata(spec)
        raise not_found(f"Malformed request: GET {self.path.split('?', 1)[0]}")

    def _answer(self, path: str, handle: Callable[[_Spec, str], tuple[str, Any]]) -> None:
        """Answer a model API request with ``handle(spec, rest)`` -> (API name, JSON payload),
        recorded as TF Serving records REST requests: counted by status, timed when OK."""
        start = time.perf_counter()
        status, model, api = "OK", "", ""
        try:
            spec, rest = _parse(path)
            model = spec.name
            api, payload = handle(spec, rest)
            self._json(200, payload)
        except ServingError as error:
            status = error.code.name
            self._error(error)
        except Exception as error:
            status = "INTERNAL"
            self._json(500, {"error": f"{type(error).__name__}: {error}"})
        finally:
            if model:
                elapsed = time.perf_counter() - start
                self.server.model_server.metrics.record(model, api, "REST", status, elapsed)

    def do_OPTIONS(self) -> None:
        """A CORS preflight: answered for any model API path that names an http(s) Origin."""
        try:
            _parse(self.path.split("?", 1)[0])
            if not _ORIGIN.search(self.headers.get("Origin", "")):
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Origin header is missing in CORS preflight",
                )
            self._send(200, b"")
        except ServingError as error:
            self._error(error)

    def _metadata(self, spec: _Spec) -> dict[str, Any]:
        servable = self.server.model_server.manager.resolve(spec.name, spec.version, spec.label)
        try:
            response = metadata_response(servable, ["signature_def"])
        finally:
            servable.release()
        from tensorflow_serving.apis import get_model_metadata_pb2

        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {
            "model_spec": {
                "name": response.model_spec.name,
                "signature_name": "",
                "version": str(response.model_spec.version.value),
            },
            "metadata": {"signature_def": _to_dict(signatures)},
        }

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""

        def post(spec: _Spec, rest: str) -> tuple[str, Any]:
            if rest in (":classify", ":regress"):
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{rest[1:]} is not implemented by fdl-model-server; use :predict",
                )
            if rest != ":predict":
                raise not_found(f"Malformed request: POST {self.path}")
            try:
                body = json.loads(raw or b"null")
            except ValueError as error:
                raise invalid(f"JSON Parse error: {error}") from error
            return "predict", self._predict(spec, body)

        self._answer(self.path.split("?", 1)[0], post)

    def _predict(self, spec: _Spec, body: Any) -> dict[str, Any]:
        model_server = self.server.model_server
        signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' key must be a string value.")
        servable = model_server.manager.resolve(spec.name, spec.version, spec.label)
        try:
            inputs, rows = parse_predict_body(body, servable.signature(signature_name))
            outputs = run_arrays(
                servable, signature_name, inputs, [], servable.batching, self.timeout
            )
        finally:
            servable.release()
        return format_outputs(outputs, rows)


def _to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    model_server: ModelServer
    cors: bool = False


def start_rest_server(model_server: ModelServer, port: int) -> _Server:
    httpd = _Server((model_server.args.bind_address, port), _Handler)
    httpd.model_server = model_server
    httpd.cors = bool(model_server.args.rest_api_enable_cors_support)
    timeout = model_server.args.rest_api_timeout_in_ms / 1000
    _Handler.timeout = timeout if timeout > 0 else None
    threading.Thread(target=httpd.serve_forever, name="rest", daemon=True).start()
    return httpd
