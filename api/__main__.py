"""``fdl-gateway``: run the gateway with uvicorn on FDL_GATEWAY_HOST:FDL_GATEWAY_PORT, and the
probe listener on FDL_PROBE_PORT when it is set (api/probe.py)."""

from __future__ import annotations

import resource
import sys

import uvicorn

from api.http_guard import GuardedHttpToolsProtocol, HttpLimits
from api.memory import tune_malloc
from api.settings import GatewaySettings, get_settings
from fdl.grpc_tuning import tune_grpc
from fdl.settings import REDIS_URL_UNSET, SETTINGS_ERRORS, WeakKeyError, settings_problem


def protocol_class(
    settings: GatewaySettings, limits: HttpLimits | None = None
) -> type[GuardedHttpToolsProtocol]:
    """uvicorn's httptools protocol with the gateway's HTTP limits (api/http_guard.py), or with
    ``limits`` (the probe listener's)."""
    limits = limits or HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        write_timeout_s=settings.write_timeout_s,
        max_connections=settings.max_connections,
    )
    members = {"limits": limits, "_unsupported_upgrade_warning": _upgrade_served_as_http}
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), members)


def _upgrade_served_as_http(self: GuardedHttpToolsProtocol) -> None:
    """With ``ws="none"`` uvicorn logs two warnings for every request with an ``Upgrade`` header,
    one telling the operator to install a WebSocket library. The gateway has no WebSocket route:
    it serves such a request as plain HTTP (its access line records it), so nothing is logged.

    httptools stops parsing such a request at the end of its headers: a body it declares never
    reaches the app, and its bytes, read later, would be parsed as the next request on the
    connection (a request of someone else's, behind a proxy that shares its connections). Such a
    request is answered (as one with an empty body) and its connection closed after the answer.
    """
    if _declares_body(self.headers):
        self.cycle.keep_alive = False


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """A ``Transfer-Encoding``, or a ``Content-Length`` other than 0, among the headers."""
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip().lstrip(b"0"))
        for name, value in headers
    )


def _raise_open_files_limit(wanted: int) -> None:
    """Room for the connection cap plus the process's own files, as far as the hard limit goes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    tune_grpc()  # before the app (and grpc) is imported
    tune_malloc()
    from api import probe  # imports the app's middleware, and with it grpc: after tune_grpc

    try:
        settings = get_settings()
    except SETTINGS_ERRORS as error:  # one line naming each setting, never its value
        sys.exit(f"fdl-gateway: {settings_problem(error)}")
    if not settings.redis_url:
        sys.exit(f"fdl-gateway: {REDIS_URL_UNSET}")
    try:
        settings.check_keys()  # before anything listens: a weak key never serves a request
    except WeakKeyError as error:
        sys.exit(f"fdl-gateway: {error}")  # to stderr, exit status 1
    # Bound before anything starts: a port in use stops the gateway here, with one clear line.
    listener = None
    if settings.probe_port:
        sock = probe.bind(settings.gateway_host, settings.probe_port)
        listener = probe.ProbeListener(sock, protocol_class(settings, probe.PROBE_LIMITS))
    _raise_open_files_limit(settings.max_connections + probe.PROBE_LIMITS.max_connections + 512)
    trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    config = uvicorn.Config(
        "api.main:make_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        http=protocol_class(settings),
        # No WebSocket route exists: an Upgrade request is served as the plain HTTP request it
        # also is (the app's JSON answer, request id, access line and metrics), where uvicorn's
        # WebSocket protocol would answer 403 text/plain itself.
        ws="none",
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        log_config=None,  # api.logs configures JSON logging in make_app
        access_log=False,  # one access line per request comes from api.middleware
        # X-Forwarded-For is believed only from FDL_TRUSTED_PROXIES (none by default): anyone
        # else could pick the address the rate limit counts.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        # Then the requests still running are cancelled: api/shutdown.py answers them.
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
    )
    probe.run(config, listener)


if __name__ == "__main__":
    main()
