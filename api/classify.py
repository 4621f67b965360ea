"""Classification as three stages, each timed: preprocess -> predict -> postprocess."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from api.imaging import decode_image
from api.metrics import CLASSIFICATIONS, UPSTREAM_ERRORS, timed
from api.preprocess import choose_profile, preprocess
from api.serving_client import InputSpec, ServingClient
from fdl import contract


@dataclass(frozen=True)
class Target:
    model: str
    version: int | None = None
    label: str | None = None


def upstream_error(error: grpc.aio.AioRpcError, target: Target, method: str) -> ApiError:
    """Map a model-server status to the HTTP answer a client can act on."""
    code = error.code()
    UPSTREAM_ERRORS.labels(method, code.name).inc()
    what = target.model + (
        f" version {target.version}"
        if target.version is not None
        else f" label {target.label}"
        if target.label
        else ""
    )
    if code == grpc.StatusCode.NOT_FOUND:
        return ApiError(404, "model_not_found", f"model {what} is not served: {error.details()}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ApiError(
            503,
            "model_server_unavailable",
            f"the model server is unavailable: {error.details()}",
            headers={"Retry-After": "1"},
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(504, "model_server_timeout", "the model server did not answer in time")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ApiError(422, "invalid_input", f"the model rejected the input: {error.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(
            503,
            "model_server_overloaded",
            error.details() or "overloaded",
            headers={"Retry-After": "1"},
        )
    return ApiError(502, "model_server_error", f"{code.name}: {error.details()}")


async def fetch_input_spec(client: ServingClient, target: Target, request_id: str) -> InputSpec:
    try:
        return await client.input_spec(target.model, target.version, target.label, request_id)
    except grpc.aio.AioRpcError as error:
        raise upstream_error(error, target, "GetModelMetadata") from error


def preprocess_images(
    images: list[bytes], spec: InputSpec, profile_override: str | None = None
) -> np.ndarray:
    profile = choose_profile(spec, profile_override)
    size = (spec.width if spec.width > 0 else 28, spec.height if spec.height > 0 else 28)
    batch = [preprocess(decode_image(data, target_size=size), spec, profile) for data in images]
    return np.stack(batch)


async def run_predict(
    client: ServingClient, target: Target, spec: InputSpec, batch: np.ndarray, request_id: str
) -> tuple[int, dict[str, np.ndarray]]:
    try:
        return await client.predict(
            target.model, {spec.input_key: batch}, version=spec.version, request_id=request_id
        )
    except grpc.aio.AioRpcError as error:
        raise upstream_error(error, target, "Predict") from error


def postprocess(outputs: dict[str, np.ndarray], top_k: int) -> list[dict[str, Any]]:
    if contract.SCORES_KEY not in outputs:
        raise ApiError(502, "bad_model_output", f"the model returned no '{contract.SCORES_KEY}'")
    scores = np.asarray(outputs[contract.SCORES_KEY], dtype=np.float64)
    classes = outputs.get(contract.CLASSES_KEY)
    predictions = []
    for row in range(scores.shape[0]):
        order = np.argsort(-scores[row], kind="stable")[: max(1, top_k)]
        names = [classes[row][i].decode() if classes is not None else str(int(i)) for i in order]
        top = [
            {"label": name, "class_id": int(i), "score": float(scores[row][i])}
            for name, i in zip(names, order, strict=True)
        ]
        predictions.append({**top[0], "top_k": top})
    return predictions


async def classify(
    client: ServingClient,
    target: Target,
    images: list[bytes],
    top_k: int,
    request_id: str,
    profile_override: str | None = None,
) -> dict[str, Any]:
    spec = await fetch_input_spec(client, target, request_id)
    with timed("preprocess", target.model):
        batch = await run_in_threadpool(preprocess_images, images, spec, profile_override)
    with timed("predict", target.model):
        version, outputs = await run_predict(client, target, spec, batch, request_id)
    with timed("postprocess", target.model):
        predictions = postprocess(outputs, top_k)
    CLASSIFICATIONS.labels(target.model).inc(len(predictions))
    return {"model": target.model, "version": version, "predictions": predictions}
