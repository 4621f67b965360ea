"""Requests that do not parse get ``INTERNAL``, as from TF Serving, on every service.

grpc.aio runs a method's request deserializer itself and answers any exception it raises with
``UNKNOWN: Unexpected <class 'google.protobuf.message.DecodeError'>: ...``: a Python class name
in the status. TF Serving's gRPC C++ server answers a message that does not parse with
``INTERNAL`` (its deserialization status). :class:`ParseChecked` stands in for the server while
the services register: each method's deserializer gives a marker instead of raising, and its
handler answers the marker with ``INTERNAL`` and :data:`PARSE_FAILED` before the servicer runs.
A streamed request is checked as the handler reads it through its request iterator.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

PARSE_FAILED = "Failed to parse the request as a {} message"

_UNPARSED = object()  # what a checked deserializer gives for bytes that do not parse

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    """``PredictRequest.FromString`` → ``tensorflow.serving.PredictRequest``."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "protocol buffer")


def _checked_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever else a parser raises on bad bytes
            return _UNPARSED

    return parse


async def _refuse(context: Context, message: str) -> None:
    await context.abort(grpc.StatusCode.INTERNAL, message)


def _unary(behavior: Callable[..., Any], message: str) -> Callable[..., Any] | None:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is _UNPARSED:
                await _refuse(context, message)
            async for response in behavior(request, context):
                yield response

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: Context) -> Any:
            if request is _UNPARSED:
                await _refuse(context, message)
            return await behavior(request, context)

        return call
    return None  # a synchronous handler (none here): left as grpc serves it


def _streamed(behavior: Callable[..., Any], message: str) -> Callable[..., Any] | None:
    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if request is _UNPARSED:
                await _refuse(context, message)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            async for response in behavior(checked(requests, context), context):
                yield response

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def call(requests: Any, context: Context) -> Any:
            return await behavior(checked(requests, context), context)

        return call
    return None


# The handler factory for each (request streaming, response streaming), and its behaviour field.
_FACTORIES: dict[tuple[bool, bool], tuple[Callable[..., Handler], str]] = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


def checked_handler(handler: Handler) -> Handler:
    """``handler`` with its request parsing checked (unchanged where it parses nothing)."""
    deserializer = handler.request_deserializer
    if deserializer is None:
        return handler
    message = PARSE_FAILED.format(_message_name(deserializer))
    factory, field = _FACTORIES[handler.request_streaming, handler.response_streaming]
    wrap = _streamed if handler.request_streaming else _unary
    behavior = wrap(getattr(handler, field), message)
    if behavior is None:
        return handler
    return factory(
        behavior,
        request_deserializer=_checked_deserializer(deserializer),
        response_serializer=handler.response_serializer,
    )


class _CheckedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner
        self.checked: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self.inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        checked = self.checked.get(method)
        if checked is None:
            checked = self.checked[method] = checked_handler(handler)
        return checked


class ParseChecked:
    """What a generated ``add_*Servicer_to_server`` calls on a server, passed on to ``server``
    with every method's request parsing checked."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([_CheckedGeneric(h) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        checked = {name: checked_handler(h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, checked)
