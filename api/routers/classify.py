"""Classification routes: latest, one version, or a labelled version of a model.

The body (multipart files, JSON ``{"instances": [{"b64": ...}]}``, a raw image) is read by
:mod:`api.bodies`; the stages run in :mod:`api.classification`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from api import auth
from api.bodies import MAX_TOP_K, read_images
from api.classification import Target, classify
from api.coalesce import PredictCoalescer
from api.custom_methods import ActionRoute
from api.decoding import DecodeLimits
from api.deps import ClassifyDep, request_id_of
from api.fastpath import FastRoute
from api.metadata_cache import MetadataCache
from api.schemas import (
    CLASSIFY_RESPONSES,
    DECIMAL_ONLY,
    ClassifyResponse,
    LabelName,
    ModelName,
)
from api.settings import GatewaySettings
from fdl.jobspec import valid_label, valid_name

router = APIRouter(prefix="/v1/models", tags=["classify"], route_class=ActionRoute)
MAX_VERSION = 2**62
MAX_VERSION_DIGITS = len(str(MAX_VERSION))  # 19


OPENAPI_EXTRA = {
    # Read by api/bodies.py (not a FastAPI parameter: the fast path reads it the same way).
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "How many classes each prediction lists, for any body kind; a body "
            "that gives top_k too must give the same value",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "top_k": {"type": "integer", "minimum": 1},
                    },
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"b64": {"type": "string"}},
                                "required": ["b64"],
                            },
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                    },
                    "required": ["instances"],
                },
                "example": {"instances": [{"b64": "iVBORw0KGgo..."}], "top_k": 3},
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class Classifier:
    """What every classify route needs besides its target, from the app's dependencies."""

    settings: GatewaySettings
    predictor: PredictCoalescer
    metadata: MetadataCache
    limits: DecodeLimits
    request_id: str

    async def respond(self, request: Request, target: Target) -> JSONResponse:
        """Returns the response directly: the result is built here, re-validating it would cost."""
        settings = self.settings
        images, top_k = await read_images(request, settings.max_body_bytes, settings.max_batch_size)
        result = await classify(
            self.predictor,
            self.metadata,
            target,
            images,
            top_k or settings.default_top_k,
            self.request_id,
            self.limits,
            profile_override=settings.profiles.get(target.model),
        )
        return JSONResponse(result)


async def classifier(request: Request) -> Classifier:
    """One dependency that reads the services start-up built: FastAPI solves every dependency of
    a route on each request, so one provider instead of one per service keeps the hot path lean
    (docs/gateway.md, "A leaner classify path")."""
    state = request.app.state
    return Classifier(
        state.settings,
        state.predictor,
        state.metadata,
        state.decode_limits,
        request_id_of(request),
    )


ClassifierDep = Annotated[Classifier, Depends(classifier)]
_Route = TypeVar("_Route", bound=Callable[..., Awaitable[JSONResponse]])


def _classify_route(path: str, summary: str) -> Callable[[_Route], _Route]:
    """The three classify routes differ only in how the path names the version."""
    return router.post(
        path,
        summary=summary,
        openapi_extra=OPENAPI_EXTRA,
        response_model=ClassifyResponse,
        responses=CLASSIFY_RESPONSES,
    )


@_classify_route("/{model}:classify", "Classify images with the model's latest version")
async def classify_latest(
    model: ModelName, request: Request, classifier: ClassifierDep, _caller: ClassifyDep
) -> JSONResponse:
    return await classifier.respond(request, Target(model))


@_classify_route("/{model}/versions/{version}:classify", "Classify images with one version")
async def classify_version(
    model: ModelName,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION), DECIMAL_ONLY],
    request: Request,
    classifier: ClassifierDep,
    _caller: ClassifyDep,
) -> JSONResponse:
    return await classifier.respond(request, Target(model, version=version))


@_classify_route(
    "/{model}/labels/{label}:classify", "Classify images with a labelled version (stable, canary)"
)
async def classify_label(
    model: ModelName,
    label: LabelName,
    request: Request,
    classifier: ClassifierDep,
    _caller: ClassifyDep,
) -> JSONResponse:
    return await classifier.respond(request, Target(model, label=label))


# The fast path (api/fastpath.py) serves these routes with the same auth, classifier and error
# handlers, for path parameters FastAPI would take as they are; others go to FastAPI.


def _latest(params: dict[str, str]) -> Target | None:
    model = params["model"]
    return Target(model) if valid_name(model) else None


def _version(params: dict[str, str]) -> Target | None:
    model, version = params["model"], params["version"]
    # Plain decimal without leading zeros only: FastAPI answers anything else ("+5", "5_0": 422
    # from DECIMAL_ONLY; "007" as 7), and a number longer than MAX_VERSION's (int() refuses over
    # 4300 digits).
    if not (
        valid_name(model)
        and len(version) <= MAX_VERSION_DIGITS
        and version.isascii()
        and version.isdigit()
        and version[0] != "0"
    ):
        return None
    number = int(version)
    return Target(model, version=number) if number <= MAX_VERSION else None


def _label(params: dict[str, str]) -> Target | None:
    model, label = params["model"], params["label"]
    return Target(model, label=label) if valid_name(model) and valid_label(label) else None


async def _serve(request: Request, target: Target) -> JSONResponse:
    """What the routes do, with their dependencies in FastAPI's order."""
    served_by = await classifier(request)
    await auth.require_classify(request)
    return await served_by.respond(request, target)


def fast_routes() -> list[FastRoute]:
    parsers = {classify_latest: _latest, classify_version: _version, classify_label: _label}
    return [
        FastRoute(route, parsers[route.endpoint], _serve)  # type: ignore[attr-defined]
        for route in router.routes
    ]
