"""The gateway's HTTP limits: fdl/http_guard.py's guarded httptools protocol (header size,
header and body read timeouts, a write-stall timeout, a connection cap) with the gateway's error
bodies (``{"error": {"code", "message"}}``), logger (``fdl.gateway.http``) and counter
``fdl_gateway_http_guard_total{reason,listener}``.
"""

from __future__ import annotations

import json
import logging

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
