"""gRPC services on grpc.aio: ``tensorflow.serving.PredictionService`` and ``ModelService``.

Handlers run on the server's event loop, so a request costs no thread hand-off of its own. Work
that blocks goes elsewhere: a Session run without batching goes to the server's thread pool (so
requests run in parallel, as in TF Serving) unless the server is otherwise idle and the model's
typical run is under ``INLINE_RUN_LIMIT_S``; a batched request waits on its batch's future; a
config reload (which waits for models to load) runs in the pool too.

Every error leaves through :func:`abort`, which cuts a message that echoes a client's request
(a 100 KB model name, thousands of input names) to ``MAX_MESSAGE_BYTES`` as gRPC sends it: past
a client's 16 KiB metadata limit it would get ``RESOURCE_EXHAUSTED`` instead of the status.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.dataplane import INLINE_RUN_LIMIT_S, SIGNATURE_DEF_FIELD, DataPlane
from serving.errors import ServingError, invalid
from serving.predict import encode_response, enqueue, predict

if TYPE_CHECKING:
    from serving.servable import Servable

T = TypeVar("T")
# The most a status message takes in its grpc-message header, percent-encoded as gRPC sends it;
# well under the 16 KiB metadata limit of a default client (TF Serving sends messages whole).
MAX_MESSAGE_BYTES = 4096


def _sent_bytes(char: str) -> int:
    """What one character takes in grpc-message: printable ASCII but "%" as is, any other byte
    of its UTF-8 as %XX."""
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "surrogatepass"))


def bounded(message: str) -> str:
    """``message``, or its start and ``… (N more characters)`` when gRPC would send more than
    ``MAX_MESSAGE_BYTES`` of it."""
    size = 0
    for index, char in enumerate(message):
        size += _sent_bytes(char)
        if size > MAX_MESSAGE_BYTES:
            return f"{message[:index]}… ({len(message) - index} more characters)"
    return message


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """End the call with ``code`` and the message, bounded; raises, as ``context.abort`` does."""
    await context.abort(code, bounded(message))


def version_of(spec: Any) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def checked_spec(request: Any, *, named: bool = True) -> Any:
    """The request's ModelSpec, refused as TF Serving refuses it before any lookup: absent
    (``predict_impl.cc``, ``get_model_status_impl.cc``: "Missing ModelSpec"), or, for calls that
    resolve a servable, without a name (``server_core.cc``, ``ServableRequestFromModelSpec``)."""
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    if named and not request.model_spec.name:
        raise invalid("ModelSpec has no name specified.")
    return request.model_spec


def _metadata_checked(request: Any) -> None:
    # get_model_metadata_impl.cc validates the fields (ValidateGetModelMetadataRequest) before
    # it resolves the spec, whose name server_core.cc checks then.
    checked_spec(request, named=False)
    if not request.metadata_field:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid(f"Metadata field {field} is not supported")
    checked_spec(request)


def _unimplemented(name: str) -> Callable[..., Awaitable[Any]]:
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            f"{name} is not implemented by fdl-model-server; use Predict (our models export "
            "only tensorflow/serving/predict signatures)",
        )

    return handler


def _finish(work: asyncio.Future, servable: Servable) -> None:
    servable.release()
    if not work.cancelled():
        work.exception()  # retrieved here, so an abandoned failure is not reported as unhandled


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, data_plane: DataPlane, executor: Executor) -> None:
        self.data_plane = data_plane
        self.executor = executor
        self._running = 0
        self._content = data_plane.tensor_content

    async def _call(
        self,
        api: str | None,
        spec: Any,
        context: grpc.aio.ServicerContext,
        body: Callable[[Servable], T | Awaitable[T]],
        check: Callable[[], object] | None = None,
    ) -> T:
        start = time.perf_counter()
        status = "OK"
        try:
            if check is not None:
                check()
            version, label = version_of(spec)
            servable = self.data_plane.resolve(spec.name, version, label)
            try:
                result = body(servable)
            except BaseException:
                servable.release()
                raise
            if not inspect.isawaitable(result):
                servable.release()
                return result
            # Work that waits is shielded from cancellation (a client that goes away) and
            # releases the version only when it has really finished, so an unload never closes
            # a Session that a pool or batch thread is still running.
            work = asyncio.ensure_future(result)
            work.add_done_callback(lambda done: _finish(done, servable))
            return await asyncio.shield(work)
        except ServingError as error:
            status = error.code.name
            failure = (error.code, error.message)
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception as error:
            status = "INTERNAL"
            failure = (grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            if api is not None:
                seconds = time.perf_counter() - start
                self.data_plane.record(spec.name, api, "GRPC", status, seconds)
        await abort(context, *failure)
        raise AssertionError("unreachable: abort raises")

    def _predict(self, servable: Servable, request: Any, timeout: float | None) -> Any:
        """The response, computed inline, or an awaitable of it; ``timeout``: the caller's
        deadline, which a batched request carries into the queue (as TF Serving's RunOptions)."""
        batching = servable.batching
        if batching is not None:
            queued = enqueue(servable, request, batching, timeout)
            return self._batched(servable, request, queued)
        if self._running == 0 and servable.typical_run_s < INLINE_RUN_LIMIT_S:
            # Nothing else is running and this model answers in about a millisecond: a thread
            # hand-off would cost as much as the run itself.
            return predict(servable, request, None, self._content)
        self._running += 1  # counted now, so a request arriving next sees this one
        return self._offloaded(servable, request)

    async def _batched(self, servable: Servable, request: Any, queued: asyncio.Future) -> Any:
        return encode_response(servable, request, await queued, self._content)

    async def _offloaded(self, servable: Servable, request: Any) -> Any:
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.executor, predict, servable, request, None, self._content
            )
        finally:
            self._running -= 1

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call(
            "Predict",
            request.model_spec,
            context,
            lambda servable: self._predict(servable, request, context.time_remaining()),
            lambda: checked_spec(request),
        )

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._call(
            None,  # TF Serving records no metrics for GetModelMetadata
            request.model_spec,
            context,
            lambda servable: self.data_plane.metadata(servable, request.metadata_field),
            lambda: _metadata_checked(request),
        )

    Classify = _unimplemented("Classify")
    Regress = _unimplemented("Regress")
    MultiInference = _unimplemented("MultiInference")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, data_plane: DataPlane, executor: Executor) -> None:
        self.data_plane = data_plane
        self.executor = executor

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            spec = checked_spec(request, named=False)
            return self.data_plane.status(spec.name, version_of(spec)[0])
        except ServingError as error:
            await abort(context, error.code, error.message)

    async def HandleReloadConfigRequest(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        loop = asyncio.get_running_loop()
        if request.config.WhichOneof("config") != "model_config_list":  # model_service_impl.cc
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                "ModelConfigList is currently supported",
            )
        try:
            await loop.run_in_executor(self.executor, self.data_plane.reload, request.config)
        except ServingError as error:
            await abort(context, error.code, error.message)
        return model_management_pb2.ReloadConfigResponse()
