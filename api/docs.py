"""The interactive API docs (/docs: Swagger UI, /redoc: ReDoc) with every asset served by the
gateway itself, so that they work without internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN. The ``fastapi-offline`` package ships
the same bundles (Swagger UI 5, ReDoc 2); the gateway serves them under ``/docs-assets`` and
builds the pages with FastAPI's helpers pointed at those local URLs.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
FAVICON_URL = "/ui/favicon.svg"
# Swagger UI would otherwise send the spec to validator.swagger.io for its validity badge.
SWAGGER_PARAMETERS = {"validatorUrl": None}
# The pages may load nothing from elsewhere (ReDoc's footer links a logo on a CDN): the browser
# refuses it before any request leaves the machine. ReDoc builds its search worker from a blob.
DOCS_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
# ...and its "API docs by Redocly" link, whose logo that policy blocks, is not shown at all.
_REDOC_STYLE = '<style>a[href*="redocly.com"] { display: none; }</style>\n</head>'


def _with_headers(page: HTMLResponse, html: str | None = None) -> HTMLResponse:
    body = html if html is not None else bytes(page.body).decode()
    return HTMLResponse(body, headers=DOCS_HEADERS)


def install_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets; the app must be built with docs_url=redoc_url=None."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{FAVICON_URL}",
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), **SWAGGER_PARAMETERS},
        )
        return _with_headers(page)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{FAVICON_URL}",
            with_google_fonts=False,
        )
        html = bytes(page.body).decode()
        return _with_headers(page, html.replace("</head>", _REDOC_STYLE, 1))
