"""Image classification: multipart files or JSON ``{"instances": [{"b64": ...}]}``."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.datastructures import UploadFile

from api.classify import Target, classify
from api.deps import RequestIdDep, ServingDep, SettingsDep
from api.errors import ApiError
from fdl.jobspec import NAME_PATTERN

router = APIRouter(prefix="/v1/models", tags=["classify"])

ModelName = Annotated[str, Path(pattern=NAME_PATTERN, description="Served model name")]
LabelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]

REQUEST_BODY = {
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
    }
}


async def read_images(request: Request, max_bytes: int) -> tuple[list[bytes], int | None]:
    """The images and the optional top_k of a multipart or JSON request."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, "body_too_large", f"the request body exceeds {max_bytes:,} bytes")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=max_bytes)
        files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
        if not files:
            raise ApiError(422, "no_image", "send the image(s) as multipart parts named 'file'")
        images = [await f.read() for f in files]
        top_k_raw = form.get("top_k")
        top_k = _parse_top_k(top_k_raw if isinstance(top_k_raw, str) else None)
        return images, top_k
    if content_type.startswith("application/json"):
        body = await request.body()
        if len(body) > max_bytes:
            raise ApiError(413, "body_too_large", f"the request body exceeds {max_bytes:,} bytes")
        return _parse_json_instances(body)
    raise ApiError(
        415,
        "unsupported_media_type",
        'send multipart/form-data with \'file\' parts or JSON {"instances": [{"b64": ...}]}',
    )


def _parse_top_k(raw: str | int | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError) as error:
        raise ApiError(422, "invalid_top_k", "top_k must be a positive integer") from error
    if value < 1 or value > 1000:
        raise ApiError(422, "invalid_top_k", "top_k must be between 1 and 1000")
    return value


def _parse_json_instances(body: bytes) -> tuple[list[bytes], int | None]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON: {error}") from error
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ApiError(422, "no_image", "'instances' must be a non-empty list of {\"b64\": ...}")
    images = []
    for index, item in enumerate(instances):
        encoded = item.get("b64") if isinstance(item, dict) else None
        if not isinstance(encoded, str):
            raise ApiError(422, "invalid_instance", f'instances[{index}] must be {{"b64": str}}')
        try:
            images.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as error:
            raise ApiError(
                422, "invalid_base64", f"instances[{index}].b64 is not valid base64"
            ) from error
    return images, _parse_top_k(payload.get("top_k"))


async def _classify(
    request: Request, target: Target, serving, settings, request_id: str
) -> dict[str, Any]:
    images, top_k = await read_images(request, settings.max_body_bytes)
    if len(images) > settings.max_batch_size:
        raise ApiError(
            422,
            "batch_too_large",
            f"{len(images)} images in one request; the limit is {settings.max_batch_size}",
        )
    return await classify(serving, target, images, top_k or settings.default_top_k, request_id)


@router.post("/{model}:classify", summary="Classify images", openapi_extra=REQUEST_BODY)
async def classify_latest(
    model: ModelName,
    request: Request,
    serving: ServingDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    return await _classify(request, Target(model), serving, settings, request_id)


@router.post(
    "/{model}/versions/{version}:classify",
    summary="Classify with one version",
    openapi_extra=REQUEST_BODY,
)
async def classify_version(
    model: ModelName,
    version: Annotated[int, Path(ge=1)],
    request: Request,
    serving: ServingDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    return await _classify(request, Target(model, version=version), serving, settings, request_id)


@router.post(
    "/{model}/labels/{label}:classify",
    summary="Classify with a labelled version",
    openapi_extra=REQUEST_BODY,
)
async def classify_label(
    model: ModelName,
    label: LabelName,
    request: Request,
    serving: ServingDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    return await _classify(request, Target(model, label=label), serving, settings, request_id)
