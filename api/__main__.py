"""``fdl-gateway``: run the gateway with uvicorn on FDL_GATEWAY_HOST:FDL_GATEWAY_PORT."""

from __future__ import annotations

import uvicorn

from api.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "api.main:app",
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="info",
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
