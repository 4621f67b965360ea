"""The gateway's HTTP limits: fdl/http_guard.py's guarded httptools protocol (header size,
header and body read timeouts, a write-stall timeout, a connection cap) with the gateway's error
bodies (``{"error": {"code", "message"}}``), logger (``fdl.gateway.http``) and counter
``fdl_gateway_http_guard_total{reason,listener}``; and, when the gateway shuts down, the answer
to a request whose body is still arriving (api/shutdown.py).
"""

from __future__ import annotations

import json
import logging

from api import shutdown
from api.errors import error_body
from api.metrics import HTTP_GUARD
from fdl import http_guard
from fdl.http_guard import CUT_STATUS, HttpLimits

__all__ = ["CUT_STATUS", "GuardedHttpToolsProtocol", "HttpLimits"]


class GuardedHttpToolsProtocol(http_guard.GuardedHttpToolsProtocol):
    log = logging.getLogger("fdl.gateway.http")
    server_name = "the gateway"
    # The counter's listener label: "public" (FDL_GATEWAY_PORT) or "probe" (api/probe.py).
    listener = "public"

    def error_json(self, status: int, reason: str, message: str) -> bytes:
        return json.dumps(error_body(reason, message)).encode()

    def count(self, reason: str) -> None:
        HTTP_GUARD.labels(reason, self.listener).inc()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown begins. A request whose body is still arriving, with no
        request queued behind it, is answered 503 ``shutting_down`` now and its connection closed
        (its route sees a disconnect; the middleware records the 503); anything else is uvicorn's
        (an idle connection closed, a request in flight given the grace)."""
        cycle = self.cycle
        if (
            cycle is None
            or not cycle.more_body
            or cycle.response_started
            or cycle.disconnected
            or self.pipeline
            or self.transport.is_closing()
        ):
            super().shutdown()
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        self.log.info(
            "closing connection from %s%s: the gateway is shutting down and the request's body "
            "is still arriving (%d)",
            client,
            self.where,
            shutdown.STATUS,
            extra={"reason": shutdown.CODE, "client": client, "status": shutdown.STATUS},
        )
        body = self.error_json(shutdown.STATUS, shutdown.CODE, shutdown.MESSAGE)
        self.transport.write(shutdown.close_response(body))
        cycle.scope[CUT_STATUS] = shutdown.STATUS  # type: ignore[literal-required]
        self.transport.close()
