"""gRPC services: ``tensorflow.serving.PredictionService`` and ``ModelService``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import any_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.errors import ServingError, invalid
from serving.predict import fill_model_spec, predict

if TYPE_CHECKING:
    from serving.server import ModelServer

T = TypeVar("T")
SIGNATURE_DEF_FIELD = "signature_def"


def version_of(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _unimplemented(name: str) -> Callable[..., Any]:
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not implemented by fdl-model-server; use Predict (our models export "
            "only tensorflow/serving/predict signatures)",
        )

    return handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def _call(
        self, api: str, spec: Any, context: grpc.ServicerContext, body: Callable[[Any], T]
    ) -> T:
        start = time.perf_counter()
        status = "OK"
        try:
            version, label = version_of(spec)
            servable = self.server.manager.resolve(spec.name, version, label)
            try:
                return body(servable)
            finally:
                servable.release()
        except ServingError as error:
            status = error.code.name
            context.abort(error.code, error.message)
        except Exception as error:
            status = "INTERNAL"
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            self.server.metrics.record(spec.name, api, "GRPC", status, time.perf_counter() - start)

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(
            "predict",
            request.model_spec,
            context,
            lambda servable: predict(servable, request, self.server.batching),
        )

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(
            "GetModelMetadata",
            request.model_spec,
            context,
            lambda servable: metadata_response(servable, list(request.metadata_field)),
        )

    Classify = _unimplemented("Classify")
    Regress = _unimplemented("Regress")
    MultiInference = _unimplemented("MultiInference")


def metadata_response(servable: Any, fields: list[str]) -> Any:
    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name != SIGNATURE_DEF_FIELD:
            raise invalid(f"Metadata field {name} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, servable, None)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signatures.items():
        signature_map.signature_def[key].CopyFrom(signature)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response.metadata[SIGNATURE_DEF_FIELD].CopyFrom(packed)
    return response


def status_response(server: ModelServer, name: str, version: int | None, label: str | None) -> Any:
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, state, code, message in server.manager.status(name, version, label):
        item = response.model_version_status.add()
        item.version = number
        item.state = state
        item.status.error_code = code.value[0]
        item.status.error_message = message
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            spec = request.model_spec
            return status_response(self.server, spec.name, *version_of(spec))
        except ServingError as error:
            context.abort(error.code, error.message)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            self.server.reload_config(request.config)
        except ServingError as error:
            context.abort(error.code, error.message)
        return model_management_pb2.ReloadConfigResponse()
