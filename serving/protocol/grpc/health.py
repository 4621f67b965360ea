"""The ``grpc.health.v1.Health`` service, bounded as TF Serving's is.

TF Serving serves gRPC C++'s ``DefaultHealthCheckService``
(``src/cpp/server/health/default_health_check_service.cc``), which refuses a service name of
more than ``MAX_SERVICE_NAME_LENGTH`` (200) bytes as a request it could not parse: ``Check``
answers ``INVALID_ARGUMENT`` and ``Watch`` ends with ``INTERNAL``, both ``could not parse
request``; an unknown name is ``NOT_FOUND`` (``service name unknown``) for ``Check``. grpcio's
``health.aio.HealthServicer`` takes a name of any length and keeps it (and its request) for as
long as a ``Watch`` stays open: 200 watches of 1 MB names held 900 MB. This one refuses long
names as TF Serving does, and also bounds the number of ``Watch`` streams open at once
(``MAX_WATCHES``; TF Serving has no bound): one more is ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

MAX_SERVICE_NAME_BYTES = 200  # default_health_check_service.cc, MAX_SERVICE_NAME_LENGTH
MAX_WATCHES = 1024
UNPARSED = "could not parse request"


def _too_long(name: str) -> bool:
    # Cheap first: a name of more than 200 characters is more than 200 bytes.
    return len(name) > MAX_SERVICE_NAME_BYTES or (
        len(name.encode("utf-8", "surrogatepass")) > MAX_SERVICE_NAME_BYTES
    )


class HealthServicer(health.aio.HealthServicer):
    """grpcio's asyncio health servicer with TF Serving's name bound and a bound on watches."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        super().__init__()
        self.max_watches = max_watches
        self.watches = 0

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if _too_long(request.service):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNPARSED)
        status = self._server_status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "service name unknown")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        if _too_long(request.service):
            await context.abort(grpc.StatusCode.INTERNAL, UNPARSED)
        if self.watches >= self.max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many health Watch streams open (at most {self.max_watches})",
            )
        self.watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self.watches -= 1
