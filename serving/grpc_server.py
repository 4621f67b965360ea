"""The gRPC front end: a grpc.aio server on the server's event loop.

It hosts ``PredictionService``, ``ModelService``, server reflection and (with
``--enable_grpc_healthcheck_service``) the standard health service, with TF Serving's message size
limits. Blocking work from the handlers runs on one shared thread pool.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from serving.event_loop import LoopThread
from serving.grpc_api import ModelService, PredictionService

if TYPE_CHECKING:
    from serving.server import ModelServer

log = logging.getLogger("serving.server")
MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving sets gRPC's send/receive limits to INT_MAX
SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)


class GrpcFrontEnd:
    def __init__(
        self, server: ModelServer, loop: LoopThread, workers: int, health_service: bool
    ) -> None:
        self.server = server
        self.loop = loop
        self.health_service = health_service
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-work")
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    def start(self, port: int) -> None:
        self.loop.run(self._start(port))
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", port)

    async def _start(self, port: int) -> None:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.server, self.executor), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.server, self.executor), server
        )
        names = [*SERVICE_NAMES, reflection.SERVICE_NAME]
        if self.health_service:
            self._health = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            for service in ("", *SERVICE_NAMES):
                await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
            names.append(health.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        if server.add_insecure_port(f"0.0.0.0:{port}") == 0:
            raise OSError(f"cannot listen for gRPC on port {port}")
        await server.start()
        self._grpc = server

    async def _stop(self, grace: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace)

    def stop(self, grace: float = 2.0) -> None:
        try:
            self.loop.run(self._stop(grace), timeout=grace + 1)
        except Exception as error:  # a stuck handler must not keep the process alive
            log.warning("gRPC server did not stop cleanly: %s", error)
        self.executor.shutdown(wait=False, cancel_futures=True)
