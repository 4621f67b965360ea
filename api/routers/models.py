"""Models: what the repository holds and the server serves; version labels (promote, roll back)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from api.admin_route import KeyFirstRoute
from api.bodies import JsonBodyDep
from api.custom_methods import ACTIONS as ACTIONS  # where the tests look for them
from api.custom_methods import ActionRoute
from api.deps import (
    AdminDep,
    ClassifyDep,
    MetadataDep,
    PromoterDep,
    RequestIdDep,
    ServingDep,
    SettingsDep,
)
from api.errors import ApiError
from api.input_spec import ModelContractError
from api.label_precondition import ETAG_RESPONSE, IfMatch, IfNoneMatch, etag, precondition_of
from api.preprocess import choose_profile
from api.repository import describe_model, model_names, safe_labels
from api.repository_access import io
from api.schemas import (
    ErrorResponse,
    LabelName,
    LabelRequest,
    LabelResponse,
    ModelDetail,
    ModelList,
    ModelName,
    errors,
)


class ModelRoute(ActionRoute, KeyFirstRoute):
    """A route whose path ends with a parameter (``/{model}``, ``/{label}``) does not match a
    path ending with a custom method: ``GET /v1/models/promo:classify`` is the classify route
    asked with the wrong method (405, ``Allow: POST``), not a model named "promo:classify" (a 422
    for its name). The custom method is told by the raw path (:mod:`api.custom_methods`):
    ``POST …/labels/stable%3Arollback`` sets the label named "stable:rollback" (refused, 422),
    it does not roll ``stable`` back."""


router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ModelRoute)
# Status calls a model listing makes at once: a repository of many models is listed in about the
# time of its slowest few calls, while one listing never floods the model server.
LISTING_CONCURRENCY = 8
# The GET routes also answer HEAD (health checkers, curl -I): the same status and headers, no
# body (the server sends none). Left out of the OpenAPI document, which lists the GETs.


@router.head("", response_model=ModelList, include_in_schema=False)
@router.get(
    "",
    summary="Models in the repository, with versions, status, labels and metrics",
    response_model=ModelList,
    responses=errors(401, 403, 429),
)
async def list_models(
    settings: SettingsDep,
    serving: ServingDep,
    promoter: PromoterDep,
    request_id: RequestIdDep,
    _caller: ClassifyDep,
) -> dict[str, Any]:
    gate = asyncio.Semaphore(LISTING_CONCURRENCY)
    # Once for the listing, in a worker thread (it may roll back a dead gateway's change).
    labels = await io(safe_labels, promoter.repository)

    async def describe(name: str) -> dict[str, Any]:
        async with gate:
            return await describe_model(serving, promoter.repository, name, request_id, labels)

    names = model_names(settings.model_dir)
    described = await asyncio.gather(*map(describe, names), return_exceptions=True)
    models = []
    for model in described:
        if isinstance(model, BaseException):
            raise model  # the first failure in listing order, as when they were asked in turn
        models.append(model)
    return {"models": models}


@router.head("/{model}", response_model=ModelDetail, include_in_schema=False)
@router.get(
    "/{model}",
    summary="One model: versions with status, labels, metrics, job id, input spec, class names",
    response_model=ModelDetail,
    responses=errors(401, 403, 404, 422, 429),
)
async def get_model(
    model: ModelName,
    settings: SettingsDep,
    serving: ServingDep,
    metadata: MetadataDep,
    promoter: PromoterDep,
    request_id: RequestIdDep,
    _caller: ClassifyDep,
) -> dict[str, Any]:
    detail = await describe_model(serving, promoter.repository, model, request_id)
    if not detail["versions"] and not (settings.model_dir / model).is_dir():
        raise ApiError(404, "model_not_found", f"no model named {model!r}")
    detail["input"] = None
    available = [v["version"] for v in detail["versions"] if v["state"] == "AVAILABLE"]
    if available:
        # Reported served here, the version answers classify by name from now on: the
        # gateway's cached "latest" must not name an older one.
        metadata.served(model, max(available))
        try:
            spec = await metadata.get(model, request_id=request_id)
        except (ModelContractError, Exception) as error:  # shown as absent, never a failure
            detail["server_error"] = detail["server_error"] or type(error).__name__
        else:
            detail["input"] = {
                "version": spec.version,
                "input_key": spec.input_key,
                "dtype": spec.dtype,
                "shape": list(spec.shape),
                "profile": choose_profile(spec, settings.profiles.get(model)),
            }
    return detail


# A label change that could not be written (api.repository_access): nothing was changed.
_REPOSITORY_ERRORS: dict[int | str, dict[str, Any]] = {
    500: {
        "model": ErrorResponse,
        "description": "The model repository could not be written "
        "(repository_error: permissions, a read-only file system); nothing was changed",
    },
    507: {
        "model": ErrorResponse,
        "description": "The model repository's disk is full "
        "(insufficient_storage); nothing was changed",
    },
}
# What the label routes answer (the promoter's outcomes and errors; 412 for a precondition,
# api/label_precondition.py, and the label's ETag).
_LABEL_ROUTE: dict[str, Any] = {
    "response_model": LabelResponse,
    "responses": ETAG_RESPONSE
    | errors(401, 403, 404, 409, 412, 422, 429, 503, 504)
    | _REPOSITORY_ERRORS,
}
# Setting one takes a JSON body: 415 for another type.
_SET_LABEL_ROUTE: dict[str, Any] = _LABEL_ROUTE | {
    "responses": ETAG_RESPONSE
    | errors(401, 403, 404, 409, 412, 415, 422, 429, 503, 504)
    | _REPOSITORY_ERRORS,
}


@router.post(
    "/{model}/labels/{label}:rollback",
    summary="Roll a label back to the newest version older than the one it names, loading it",
    **_LABEL_ROUTE,
)
async def roll_back_label(
    request: Request,
    response: Response,
    model: ModelName,
    label: LabelName,
    promoter: PromoterDep,
    _key: AdminDep,
    _if_match: IfMatch = None,
) -> dict[str, Any]:
    # Read once the key is checked (a 401 goes first); If-None-Match is refused here (422).
    change = promoter.roll_back(model, label, precondition_of(request, create=False))
    return _tagged(response, await _of_a_model(promoter.repository.model_dir, model, change))


@router.post(
    "/{model}/labels/{label}",
    summary="Point a label (stable, canary) at a version: promote or roll back",
    **_SET_LABEL_ROUTE,
)
async def set_label(
    request: Request,
    response: Response,
    _json: JsonBodyDep,
    model: ModelName,
    label: LabelName,
    body: LabelRequest,
    promoter: PromoterDep,
    _key: AdminDep,
    _if_match: IfMatch = None,
    _if_none_match: IfNoneMatch = None,
) -> dict[str, Any]:
    expect = precondition_of(request, create=True)
    change = promoter.set_label(model, label, body.version, expect)
    return _tagged(response, await _of_a_model(promoter.repository.model_dir, model, change))


@router.delete(
    "/{model}/labels/{label}",
    summary="Remove a label",
    response_model=LabelResponse,
    responses=errors(401, 403, 404, 409, 412, 422, 429, 503) | _REPOSITORY_ERRORS,
)
async def remove_label(
    request: Request,
    model: ModelName,
    label: LabelName,
    promoter: PromoterDep,
    _key: AdminDep,
    _if_match: IfMatch = None,
) -> dict[str, Any]:
    # No ETag: the label is gone (the body's "version" names the one it pointed at).
    change = promoter.remove_label(model, label, precondition_of(request, create=False))
    return await _of_a_model(promoter.repository.model_dir, model, change)


def _tagged(response: Response, answer: dict[str, Any]) -> dict[str, Any]:
    """The label's entity tag, its version now, on a change's answer (for If-Match)."""
    response.headers["ETag"] = etag(answer["version"])
    return answer


async def _of_a_model(
    model_dir: Path, model: str, change: Awaitable[dict[str, Any]]
) -> dict[str, Any]:
    """A label change, whose "no such label / version" for a model the repository does not hold
    is answered as ``GET /v1/models/{model}`` answers it: 404 ``model_not_found``."""
    try:
        return await change
    except ApiError as error:
        no_such = error.code in ("label_not_found", "version_not_found", "precondition_failed")
        if no_such and not await io(Path.is_dir, model_dir / model):
            raise ApiError(404, "model_not_found", f"no model named {model!r}") from error
        raise
