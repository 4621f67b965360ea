"""``fdl-gateway``: run the gateway with uvicorn on FDL_GATEWAY_HOST:FDL_GATEWAY_PORT."""

from __future__ import annotations

import uvicorn

from api.settings import get_settings
from fdl.grpc_tuning import tune_grpc


def main() -> None:
    tune_grpc()  # before the app (and grpc) is imported
    settings = get_settings()
    uvicorn.run(
        "api.main:make_app",
        factory=True,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,  # api.logs configures JSON logging in make_app
        access_log=False,  # one access line per request comes from api.middleware
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
