"""Classification in timed stages: decode -> preprocess -> predict -> postprocess."""

from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from PIL import Image

from api.coalesce import PredictCoalescer
from api.decoding import DecodeLimits, prepare_batch, prepare_bounded
from api.errors import ApiError
from api.image_open import SUPPORTED
from api.image_structure import check_structure
from api.input_spec import InputSpec, ModelContractError
from api.metadata_cache import MetadataCache
from api.metrics import CLASSIFICATIONS, UPSTREAM_ERRORS, child, timed
from api.preprocess import choose_profile
from api.serving_client import ServingClient
from fdl import contract

_INLINE_MAX_BYTES = 16 * 1024
_INLINE_MAX_PIXELS = 64 * 64
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Target:
    model: str
    version: int | None = None
    label: str | None = None

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.model} version {self.version}"
        if self.label:
            return f"{self.model} label {self.label}"
        return self.model


def upstream_error(error: grpc.aio.AioRpcError, target: Target, method: str) -> ApiError:
    """Map a model-server status to the HTTP answer a client can act on."""
    code = error.code()
    UPSTREAM_ERRORS.labels(method, code.name).inc()
    details = error.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return ApiError(
            404, "model_not_found", f"model {target.describe()} is not served: {details}"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return ApiError(
            503,
            "model_server_unavailable",
            f"the model server is unavailable: {details}",
            headers={"Retry-After": "1"},
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(504, "model_server_timeout", "the model server did not answer in time")
    if target.label and code == grpc.StatusCode.INVALID_ARGUMENT and "label" in details.lower():
        # TF Serving answers INVALID_ARGUMENT for "Unrecognized servable version label".
        return ApiError(404, "label_not_found", f"model {target.describe()}: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return ApiError(422, "invalid_input", f"the model rejected the input: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(503, "model_server_overloaded", details, headers={"Retry-After": "1"})
    return ApiError(502, "model_server_error", f"{code.name}: {details}")


def postprocess(outputs: dict[str, np.ndarray], top_k: int, rows: int) -> list[dict[str, Any]]:
    """The predictions of ``rows`` images from the model's outputs (502 if they are not that)."""
    if contract.SCORES_KEY not in outputs:
        raise ApiError(502, "bad_model_output", f"the model returned no '{contract.SCORES_KEY}'")
    scores = np.asarray(outputs[contract.SCORES_KEY], dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != rows or scores.shape[1] == 0:
        shape = list(scores.shape)  # one row per image, at least one class
        raise ApiError(502, "bad_model_output", f"'scores' has shape {shape}, not [{rows}, K>0]")
    if not np.isfinite(scores).all():  # weights that diverged (workers publish no such model)
        broken = "the model returned NaN or infinite scores: this version is broken"
        raise ApiError(502, "bad_model_output", broken)
    classes = outputs.get(contract.CLASSES_KEY)
    if classes is not None and classes.shape != scores.shape:
        classes = None
    k = max(1, min(top_k, scores.shape[1]))
    predictions = []
    for row in range(scores.shape[0]):
        order = np.argsort(-scores[row], kind="stable")[:k]
        top = [
            {
                "label": _name(classes, row, int(i)),
                "class_id": int(i),
                "score": float(scores[row][i]),
            }
            for i in order
        ]
        predictions.append({**top[0], "top_k": top})
    return predictions


def _name(classes: np.ndarray | None, row: int, index: int) -> str:
    if classes is None:
        return str(index)
    value = classes[row][index]
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


async def input_spec(cache: MetadataCache, target: Target, request_id: str) -> InputSpec:
    """The input spec of the version ``target`` names, or the :class:`ApiError` to answer."""
    try:
        return await cache.get(target.model, target.version, target.label, request_id)
    except grpc.aio.AioRpcError as error:
        # Built in a function of its own: a frame that held the answer it raised would be in a
        # cycle with it (through its traceback), and keep the request's body until a collection.
        raise await _metadata_answer(cache.client, target, request_id, error) from error
    except ModelContractError as error:
        raise ApiError(502, "unsupported_model", str(error)) from error


async def _metadata_answer(
    client: ServingClient, target: Target, request_id: str, error: grpc.aio.AioRpcError
) -> ApiError:
    answer = upstream_error(error, target, "GetModelMetadata")
    if answer.code == "label_not_found":
        return await _unless_no_model(client, target, request_id, answer)
    return answer


async def _unless_no_model(
    client: ServingClient, target: Target, request_id: str, label_error: ApiError
) -> ApiError:
    """TF Serving (and ``serving/``) read a label before they look the model up, so a label of a
    model that is not served is answered "Unrecognized servable version label": asked only then,
    the model's ``GetModelStatus`` tells the two apart (NOT_FOUND: no such model)."""
    try:
        await client.model_status(target.model, request_id)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            details = error.details() or error.code().name
            return ApiError(
                404, "model_not_found", f"model {target.model} is not served: {details}"
            )
    return label_error  # served (or unknown: the server did not answer): the label is unknown


async def _spec_and_predict(
    predictor: PredictCoalescer,
    cache: MetadataCache,
    target: Target,
    images: list[bytes],
    profile_override: str | None,
    limits: DecodeLimits,
    request_id: str,
    deadline: float,
) -> tuple[int, dict[str, np.ndarray]]:
    spec = await input_spec(cache, target, request_id)
    profile = choose_profile(spec, profile_override)
    if _small(images):
        # Tiny images cost less to process than a hop to a worker thread.
        batch = prepare_batch(images, spec, profile, limits.max_pixels, target.model)
    else:
        batch = await prepare_bounded(images, spec, profile, limits, target.model)
    with timed("predict", target.model):
        try:
            # Pinned to the version whose input spec shaped the batch.
            return await predictor.predict(
                target.model, spec.version, spec.input_key, batch, request_id, deadline
            )
        except grpc.aio.AioRpcError as error:
            if target.version is None and _version_unavailable(error):
                # The version latest / the label named (maybe cached before a change of labels
                # through another gateway) is gone, or loading again: resolve anew.
                cache.invalidate(target.model, spec.version)
                raise _Stale from error
            raise upstream_error(error, target, "Predict") from error


def _version_unavailable(error: grpc.aio.AioRpcError) -> bool:
    """Whether the server answered that the version asked for is not served (NOT_FOUND) or is
    still loading (UNAVAILABLE with that reason; a server that is down is UNAVAILABLE too)."""
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return True
    return code == grpc.StatusCode.UNAVAILABLE and "still loading" in (error.details() or "")


def _small(images: list[bytes]) -> bool:
    """One small file that declares at most 64x64 pixels (a header read, no decoding)."""
    if len(images) != 1 or len(images[0]) > _INLINE_MAX_BYTES:
        return False
    data = images[0]
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        # The commonest case, read straight from the PNG header (Pillow's open costs more).
        width, height = struct.unpack(">II", data[16:24])
        small: bool = width * height <= _INLINE_MAX_PIXELS
        return small
    try:
        # The header is read on the event loop: only a file whose structure is bounded
        # (api/image_structure.py) in a format the gateway reads, as open_image reads it.
        check_structure(data)
        with Image.open(io.BytesIO(data), formats=SUPPORTED) as image:
            return image.width * image.height <= _INLINE_MAX_PIXELS
    except Exception:  # refused or undecodable: let the worker thread produce the error
        return False


class _Stale(Exception):
    pass


def _stale_answer(stale: _Stale, target: Target) -> ApiError:
    cause = stale.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError)
    return upstream_error(cause, target, "Predict")


async def classify(
    predictor: PredictCoalescer,
    cache: MetadataCache,
    target: Target,
    images: list[bytes],
    top_k: int,
    request_id: str,
    limits: DecodeLimits,
    profile_override: str | None = None,
) -> dict[str, Any]:
    # The request's predict deadline: a stale version's retry, its wait for a merged Predict and
    # the resends of one the model server refused (api/coalesce.py) stay within it.
    deadline = time.monotonic() + cache.client.timeout_s
    args = (predictor, cache, target, images, profile_override, limits, request_id, deadline)
    try:
        version, outputs = await _spec_and_predict(*args)
    except _Stale as stale:
        # Once, and only while the request is within its predict deadline.
        if time.monotonic() >= deadline:
            raise _stale_answer(stale, target) from stale.__cause__
        try:
            version, outputs = await _spec_and_predict(*args)
        except _Stale as again:
            raise _stale_answer(again, target) from again.__cause__
    with timed("postprocess", target.model):
        predictions = postprocess(outputs, top_k, len(images))
    child(CLASSIFICATIONS, target.model).inc(len(predictions))
    return {"model": target.model, "version": version, "predictions": predictions}
