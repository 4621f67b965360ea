"""One access-log line and the request metrics of every HTTP request the gateway answered (or
whose client went away): written by :class:`api.middleware.GatewayMiddleware` when it ends."""

from __future__ import annotations

import logging

from starlette.types import Scope

from api.metrics import REQUEST_LATENCY, REQUESTS, child

log = logging.getLogger("fdl.gateway.access")


def record(scope: Scope, status: int, elapsed: float) -> None:
    """Count the request (its route's template, method, model and status) and its seconds, and
    log it, except the scrapes and probes."""
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    model = (scope.get("path_params") or {}).get("model", "")
    if status >= 400:
        # Only an answer proves the model is served: names from refused requests (unknown,
        # invalid, unauthenticated, rate-limited...) stay out of the labels, so nobody can
        # create unbounded series.
        model = ""
    method = scope.get("method", "")
    child(REQUESTS, template, method, model, str(status)).inc()
    child(REQUEST_LATENCY, template, method).observe(elapsed)
    if template in ("/metrics", "/healthz"):
        return  # scrapes and probes would drown the access log
    log.info(
        "%s %s %s %.1fms",
        method,
        scope.get("path", ""),
        status,
        elapsed * 1000,
        extra={
            "method": method,
            "path": scope.get("path", ""),
            "route": template,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
        },
    )
