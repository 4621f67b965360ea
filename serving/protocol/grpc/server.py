"""The gRPC front end: a grpc.aio server on the server's event loop.

It hosts ``PredictionService``, ``ModelService``, server reflection and (with
``--enable_grpc_healthcheck_service``) the standard health service, with TF Serving's message size
limits, on ``--port`` and ``--grpc_socket_path`` (both with the ``--ssl_config_file`` credentials,
as in TF Serving), with ``--grpc_channel_arguments`` as server options. Blocking work from the
handlers runs on one shared thread pool.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from fdl.grpc_tuning import MAX_MESSAGE_BYTES
from serving.dataplane import DataPlane
from serving.event_loop import LoopThread
from serving.protocol.grpc.health import HealthServicer
from serving.protocol.grpc.options import check_socket_path, server_credentials, server_options
from serving.protocol.grpc.parsing import ParseChecked
from serving.protocol.grpc.servicer import ModelService, PredictionService

log = logging.getLogger("serving.server")
# Overridable with --grpc_channel_arguments; without SO_REUSEPORT a port in use fails the start.
DEFAULT_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]
SERVICE_NAMES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)


def _listen(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None, what: str
) -> None:
    try:  # gRPC returns 0 or (newer releases) raises when it cannot bind
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {what}: {error}") from error
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {what}")


class GrpcFrontEnd:
    """The gRPC server of one model server process.

    Args:
        data_plane: the model operations the services translate to.
        loop: the event loop thread the grpc.aio server runs on.
        workers: threads for the blocking work handed off the loop.
        health_service: also serve ``grpc.health.v1.Health``.
        bind_address: the host ``--port`` listens on.
        channel_arguments: ``--grpc_channel_arguments``, applied over the defaults.
        ssl_config_file: ``--ssl_config_file``, or empty for plaintext.
        socket_path: ``--grpc_socket_path``, or empty for none.
    """

    def __init__(
        self,
        data_plane: DataPlane,
        loop: LoopThread,
        *,
        workers: int,
        health_service: bool,
        bind_address: str,
        channel_arguments: str = "",
        ssl_config_file: str = "",
        socket_path: str = "",
    ) -> None:
        self.data_plane = data_plane
        self.loop = loop
        self.health_service = health_service
        self.bind_address = bind_address
        self.channel_arguments = channel_arguments
        self.ssl_config_file = ssl_config_file
        self.socket_path = socket_path
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-work")
        self._grpc: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None

    def start(self, port: int) -> None:
        """Serve on ``port`` (0: none) and on ``--grpc_socket_path`` if given."""
        options = server_options(DEFAULT_OPTIONS, self.channel_arguments)
        credentials = None
        if self.ssl_config_file:
            credentials = server_credentials(self.ssl_config_file)
            log.info("Using SSL credentials from %s", self.ssl_config_file)
        socket_path = self.socket_path
        if socket_path:
            check_socket_path(socket_path)
        self.loop.run(self._start(port, socket_path, options, credentials))
        if port:
            log.info("Running gRPC ModelServer at %s ...", _address(self.bind_address, port))
        if socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", socket_path)

    async def _start(
        self,
        port: int,
        socket_path: str,
        options: list[tuple[str, int | str]],
        credentials: grpc.ServerCredentials | None,
    ) -> None:
        server = grpc.aio.server(options=options)
        # Every service registers through ParseChecked: a request that does not parse gets
        # INTERNAL, as from TF Serving, not grpc.aio's UNKNOWN naming a Python class.
        services = ParseChecked(server)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.data_plane, self.executor), services
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.data_plane, self.executor), services
        )
        names = [*SERVICE_NAMES, reflection.SERVICE_NAME]
        if self.health_service:
            # TF Serving's bound on service names, and a bound on open Watch streams (health.py).
            self._health = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, services)
            for service in ("", *SERVICE_NAMES):
                await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
            names.append(health.SERVICE_NAME)
        # What reflection.enable_server_reflection does for a grpc.aio server.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(names), services
        )
        if port:
            _listen(server, _address(self.bind_address, port), credentials, f"port {port}")
        if socket_path:
            _listen(server, f"unix:{socket_path}", credentials, f"UNIX socket {socket_path}")
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


def _address(host: str, port: int) -> str:
    """gRPC's ``host:port``; an IPv6 literal (``--bind_address`` holds it without brackets) in
    brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
