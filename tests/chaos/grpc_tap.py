"""A gRPC proxy in front of one real server that counts the calls of each method: how many
configs a gateway sent a model server, which the server itself does not say."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"


class Tap:
    """Every unary call, forwarded as bytes, with its deadline; an error as the server's."""

    def __init__(self, upstream: str) -> None:
        self.calls: Counter[str] = Counter()
        self._channel = grpc.insecure_channel(upstream)
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers([_Forward(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> Any:
        self.calls[method] += 1
        call = self._channel.unary_unary(method)  # no (de)serializers: bytes through
        try:
            return call(request, timeout=context.time_remaining())
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or "")

    def close(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self.tap.forward(method, request, context)
        )
