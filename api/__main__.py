"""``fdl-gateway``: run the gateway with uvicorn on FDL_GATEWAY_HOST:FDL_GATEWAY_PORT."""

from __future__ import annotations

import resource
import sys

import uvicorn

from api.http_guard import GuardedHttpToolsProtocol, HttpLimits
from api.memory import tune_malloc
from api.settings import GatewaySettings, get_settings
from fdl.grpc_tuning import tune_grpc
from fdl.settings import WeakKeyError


def protocol_class(settings: GatewaySettings) -> type[GuardedHttpToolsProtocol]:
    """uvicorn's httptools protocol with the gateway's HTTP limits (api/http_guard.py)."""
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        write_timeout_s=settings.write_timeout_s,
        max_connections=settings.max_connections,
    )
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def _raise_open_files_limit(wanted: int) -> None:
    """Room for the connection cap plus the process's own files, as far as the hard limit goes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    tune_grpc()  # before the app (and grpc) is imported
    tune_malloc()
    settings = get_settings()
    try:
        settings.check_keys()  # before anything listens: a weak key never serves a request
    except WeakKeyError as error:
        sys.exit(f"fdl-gateway: {error}")  # to stderr, exit status 1
    _raise_open_files_limit(settings.max_connections + 512)
    trusted = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    uvicorn.run(
        "api.main:make_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        http=protocol_class(settings),
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        log_config=None,  # api.logs configures JSON logging in make_app
        access_log=False,  # one access line per request comes from api.middleware
        # X-Forwarded-For is believed only from FDL_TRUSTED_PROXIES (none by default): anyone
        # else could pick the address the rate limit counts.
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
