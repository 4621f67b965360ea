"""The interactive API docs (/docs: Swagger UI, /redoc: ReDoc) with every asset served by the
gateway itself, so that they work without internet.

FastAPI's own pages load Swagger UI and ReDoc from a CDN. The ``fastapi-offline`` package ships
the same bundles (Swagger UI 5, ReDoc 2); the gateway serves them under ``/docs-assets`` and
builds the pages with FastAPI's helpers pointed at those local URLs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from importlib.resources import files
from os import PathLike
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
FAVICON_URL = "/ui/favicon.svg"
# Swagger UI would otherwise send the spec to validator.swagger.io for its validity badge.
SWAGGER_PARAMETERS = {"validatorUrl": None}
# The pages may load nothing from elsewhere (ReDoc's footer links a logo on a CDN): the browser
# refuses it before any request leaves the machine. ReDoc builds its search worker from a blob.
# Scripts: the gateway's files, and the page's own inline script (Swagger UI's set-up, which
# FastAPI writes into the page) by its SHA-256 ({scripts}); no other inline script runs, so
# markup that got into the page (a description in the OpenAPI document) cannot run one.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'{scripts}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# A script element without attributes: an inline script of FastAPI's page (``<script src=…>``
# loads a file).
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# ...and its "API docs by Redocly" link, whose logo that policy blocks, is not shown at all.
_REDOC_STYLE = '<style>a[href*="redocly.com"] { display: none; }</style>\n</head>'


# Request headers the static mounts never see: they always send the whole file.
_RANGE_HEADERS = frozenset({b"range", b"if-range"})


class WholeFiles(StaticFiles):
    """Static files, always whole: ``Range`` (and ``If-Range``) is ignored and ``Accept-Ranges``
    is not sent, so any ``Range`` gets the full 200.

    Starlette's ``FileResponse`` answered an odd one with a ``text/plain`` 400 or 416, not the
    gateway's JSON error: ``items=0-1`` ("Only support bytes range", where RFC 9110 says an
    unknown unit is ignored), ``bytes=5-2``, ``bytes=99999-``. The UI's files and the docs'
    bundles are small and fetched whole by browsers; ETag, Last-Modified and 304 stay."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(without_range(scope), receive, send)

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if "accept-ranges" in response.headers:
            del response.headers["accept-ranges"]
        return response


class WholeFileResponse(FileResponse):
    """A ``FileResponse`` that always sends the whole file, as :class:`WholeFiles` does (for a
    route's small files: a report's PNG)."""

    def __init__(self, path: PathLike[str] | str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        del self.headers["accept-ranges"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(without_range(scope), receive, send)


def without_range(scope: Scope) -> Scope:
    """An HTTP request's scope without its ``Range`` and ``If-Range`` headers."""
    if scope["type"] != "http":
        return scope
    kept = [(k, v) for k, v in scope["headers"] if k.lower() not in _RANGE_HEADERS]
    return {**scope, "headers": kept}


def docs_policy(html: str) -> str:
    """The Content-Security-Policy of a docs page ``html``: its inline scripts allowed by their
    hashes, computed from the page as it is sent (its OpenAPI URL holds the root path)."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return DOCS_POLICY.format(scripts=hashes)


def _with_headers(page: HTMLResponse, html: str | None = None) -> HTMLResponse:
    body = html if html is not None else bytes(page.body).decode()
    headers = {"Content-Security-Policy": docs_policy(body), "Referrer-Policy": "no-referrer"}
    return HTMLResponse(body, headers=headers)


def install_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets; the app must be built with docs_url=redoc_url=None."""
    app.mount(ASSETS_URL, WholeFiles(directory=ASSETS_DIR), name="docs-assets")

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
