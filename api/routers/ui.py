"""The web UI (static files at ``/ui``) and the two read-only routes it needs besides the API:
the image as a model sees it after preprocessing, and a published version's evaluation report."""

from __future__ import annotations

import io
import json
import math
import os
import re
from os import PathLike
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse, Response
from PIL import Image
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from api.bodies import read_images
from api.classification import Target, input_spec
from api.custom_methods import ActionRoute
from api.decoding import prepare_bounded
from api.deps import ClassifyDep, DecodeLimitsDep, MetadataDep, RequestIdDep, SettingsDep
from api.docs import WholeFileResponse, WholeFiles
from api.errors import ApiError
from api.preprocess import choose_profile
from api.repository import public_paths
from api.routers.classify import MAX_VERSION
from api.schemas import DECIMAL_ONLY, ModelName
from fdl import contract
from fdl.jobspec import NAME_PATTERN, check_label
from fdl.repository_reads import version_dir

router = APIRouter(route_class=ActionRoute)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Static paths: segments of letters, digits, '-', '_' and one extension; never '..' or hidden.
# Both are applied with fullmatch: with match, "$" also matches before a trailing newline.
_STATIC_RE = re.compile(r"(?:[a-z0-9][a-z0-9_\-]*/){0,3}[a-z0-9][a-z0-9_\-.]*\.[a-z0-9]+", re.I)
_REPORT_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,96}\.(png|json)", re.I)
# The page loads its scripts as ES modules; some systems' mime.types name .js differently.
_JAVASCRIPT = "text/javascript; charset=utf-8"
# The UI is small and changes with the gateway: revalidate every load, never serve it stale.
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# Everything comes from the gateway itself: no CDN, no third-party script can run in the page.
_PAGE_HEADERS = {
    **_NO_CACHE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}

# HEAD as well as GET: link checkers and `curl -I` probe the UI with HEAD.
_GET_HEAD = ["GET", "HEAD"]


def _label(value: str | None) -> str | None:
    return None if value is None else check_label(value)


class UIFiles(WholeFiles):
    """The files under ``/ui/`` (``index.html`` for the folder itself), with the headers the page
    needs; only plain names are looked up, never hidden files or ``..``; always whole (a
    ``Range`` is ignored: :class:`api.docs.WholeFiles`)."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR, html=True)

    async def get_response(self, path: str, scope: Scope) -> Response:
        missing = ApiError(404, "not_found", f"no UI file {path!r}")
        if path != "." and (not _STATIC_RE.fullmatch(path) or ".." in path):
            raise missing
        try:
            return await super().get_response(path, scope)
        except StarletteHTTPException as error:
            raise (missing if error.status_code == 404 else error) from None

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        name = str(full_path)
        response.headers.update(_PAGE_HEADERS if name.endswith(".html") else _NO_CACHE)
        if name.endswith(".js"):
            response.headers["Content-Type"] = _JAVASCRIPT
        return response


def mount_static(app: FastAPI) -> None:
    """Serve the UI's files under ``/ui/`` (a mount: routers cannot carry one)."""
    app.mount("/ui", UIFiles(), name="ui")


@router.api_route("/", methods=_GET_HEAD, include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.api_route("/ui", methods=_GET_HEAD, include_in_schema=False)
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


def _png(batch: np.ndarray) -> bytes:
    array = np.clip(batch[0], 0, 255)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@router.post(
    "/v1/models/{model}:preprocess",
    tags=["ui"],
    summary="The first image as the model sees it after preprocessing (PNG, model input size)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def preprocess_preview(
    model: ModelName,
    request: Request,
    settings: SettingsDep,
    metadata: MetadataDep,
    limits: DecodeLimitsDep,
    request_id: RequestIdDep,
    _caller: ClassifyDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION), DECIMAL_ONLY] = None,
    label: Annotated[str | None, Query(pattern=NAME_PATTERN), AfterValidator(_label)] = None,
) -> Response:
    images, _top_k = await read_images(request, settings.max_body_bytes, settings.max_batch_size)
    target = Target(model, version=version, label=None if version else label)
    spec = await input_spec(metadata, target, request_id)
    profile = choose_profile(spec, settings.profiles.get(model))
    batch = await prepare_bounded(images[:1], spec, profile, limits, model)
    png = await run_in_threadpool(_png, batch)
    headers = {"Cache-Control": "no-store", "X-Model-Version": str(spec.version)}
    return Response(png, media_type="image/png", headers=headers)


@router.get(
    "/v1/models/{model}/versions/{version}/report/{name}",
    tags=["ui"],
    summary="A file of a published version's evaluation report (PNG or JSON in assets.extra/; "
    "absolute paths in JSON are cut to their last component)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/json": {}}}},
)
async def version_report(
    model: ModelName,
    version: Annotated[int, PathParam(ge=1, le=MAX_VERSION), DECIMAL_ONLY],
    name: str,
    settings: SettingsDep,
    _caller: ClassifyDep,
) -> Response:
    if not _REPORT_RE.fullmatch(name):
        raise ApiError(
            422, "invalid_report_file", "the report file must be a plain name ending .png or .json"
        )
    # In a worker thread: finding the version's folder (``05`` for 5) takes a few stats.
    try:
        path = await run_in_threadpool(_report_path, settings.model_dir / model, version, name)
    except (OSError, RuntimeError) as error:  # RuntimeError: resolve() met a symlink loop
        raise ApiError(
            404, "report_not_found", f"model {model} version {version} has no readable {name!r}"
        ) from error
    if path is None:
        raise ApiError(
            404, "report_not_found", f"model {model} version {version} has no report file {name!r}"
        )
    headers = {"Cache-Control": "no-cache"}
    if name.lower().endswith(".png"):
        return WholeFileResponse(path, media_type="image/png", headers=headers)
    # JSON (metadata.json names the worker's dataset folder): absolute paths are served cut.
    try:
        document = await run_in_threadpool(_read_json, path)
    except (OSError, ValueError) as error:
        raise ApiError(
            404, "report_not_found", f"model {model} version {version} has no readable {name!r}"
        ) from error
    return JSONResponse(public_paths(document), headers=headers)


def _report_path(model_path: Path, version: int, name: str) -> Path | None:
    """A report file in ``assets.extra/`` of the folder the model server loads ``version`` from
    (:func:`fdl.repository_reads.version_dir`); None when it is no regular file there.

    Raises:
        OSError: the folder cannot be looked into (``PermissionError``: closed to the gateway).
        RuntimeError: a symlink loop on the way (``Path.resolve``'s error for one).
    """
    folder = (version_dir(model_path, version) / contract.ASSETS_EXTRA_DIR).resolve()
    path = (folder / name).resolve()
    return path if path.parent == folder and path.is_file() else None


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _read_json(path: Path) -> object:
    """A report file, with NaN, Infinity and numbers beyond a double (``1e999``) read as null:
    Python's ``json.dumps`` writes them, and JSON (the response) cannot carry them."""
    return json.loads(path.read_bytes(), parse_constant=lambda _name: None, parse_float=_finite)
