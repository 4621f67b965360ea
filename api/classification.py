"""Classification in timed stages: decode -> preprocess -> predict -> postprocess."""

from __future__ import annotations

import functools
import io
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.budget import Budget
from api.coalesce import PredictCoalescer
from api.errors import ApiError
from api.imaging import DEFAULT_MAX_PIXELS, decode_cost, decode_image, open_image
from api.input_spec import InputSpec, ModelContractError
from api.metadata_cache import MetadataCache
from api.metrics import CLASSIFICATIONS, STAGE_LATENCY, UPSTREAM_ERRORS, child, timed
from api.preprocess import choose_profile, decode_size, preprocess
from fdl import contract

if TYPE_CHECKING:
    from api.settings import GatewaySettings

# The input side assumed when a model's signature leaves height or width unknown.
_DEFAULT_SIDE = 28
_INLINE_MAX_BYTES = 16 * 1024
_INLINE_MAX_PIXELS = 64 * 64
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NUMPY_INPUT = {"DT_UINT8": np.uint8, "DT_FLOAT": np.float32, "DT_HALF": np.float16}


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


@dataclass(frozen=True)
class DecodeLimits:
    """Pixels per image, per request, and in flight across the process (docs/gateway.md)."""

    budget: Budget
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_pixels: int = 4 * DEFAULT_MAX_PIXELS
    free_pixels: int = 512 * 512

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> DecodeLimits:
        budget = Budget(
            "decode", settings.decode_budget_pixels, settings.decode_wait_s, "decoded pixels"
        )
        return cls(
            budget,
            settings.max_image_pixels,
            settings.max_batch_pixels,
            settings.decode_free_pixels,
        )


@contextmanager
def _numbered(index: int, count: int) -> Iterator[None]:
    """An image's errors name it when the request has several."""
    try:
        yield
    except ApiError as error:
        if count > 1:
            error.message = f"image {index}: {error.message}"
        raise


async def prepare_bounded(
    images: list[bytes], spec: InputSpec, profile: str, limits: DecodeLimits, model: str
) -> np.ndarray:
    """prepare_batch in a worker thread, within the pixel limits and the process's budget.

    Headers are read here (no pixel is decoded) to learn what decoding will cost; the images of a
    request decode one after another, so the request holds its largest image's share.
    """
    work = decode_size(profile, _input_size(spec))
    opened = []
    for index, data in enumerate(images):
        with _numbered(index, len(images)):
            opened.append(open_image(data, work, limits.max_pixels))
    pixels = [decode_cost(image) for image in opened]
    if sum(pixels) > limits.max_batch_pixels:
        raise ApiError(
            413,
            "batch_too_large",
            f"the images have {sum(pixels):,} pixels together; "
            f"the limit is {limits.max_batch_pixels:,}",
        )
    prepare = functools.partial(prepare_batch, opened, spec, profile, limits.max_pixels, model)
    if max(pixels) <= limits.free_pixels:
        return await run_in_threadpool(prepare)
    async with limits.budget.share(max(pixels)):
        return await run_in_threadpool(prepare)


def _input_size(spec: InputSpec) -> tuple[int, int]:
    """(width, height) of the model's input."""
    height = spec.height if spec.height > 0 else _DEFAULT_SIDE
    width = spec.width if spec.width > 0 else _DEFAULT_SIDE
    return width, height


def prepare_batch(
    images: Sequence[bytes | Image.Image],
    spec: InputSpec,
    profile: str,
    max_pixels: int,
    model: str,
) -> np.ndarray:
    """Decode and preprocess every image (runs in a worker thread); stages are timed."""
    if len(spec.shape) != 4 or spec.dtype not in _NUMPY_INPUT:
        raise ApiError(
            502,
            "unsupported_model_input",
            f"the model takes {spec.dtype} {list(spec.shape)}, not an image batch [N, H, W, C]",
        )
    work = decode_size(profile, _input_size(spec))
    decode_s = preprocess_s = 0.0
    batch = []
    for index, data in enumerate(images):
        start = time.perf_counter()
        with _numbered(index, len(images)):
            image = decode_image(data, work, max_pixels)
            middle = time.perf_counter()
            try:
                batch.append(preprocess(image, spec, profile))
            except (ValueError, ArithmeticError, OSError) as error:
                raise ApiError(
                    422, "unprocessable_image", f"the image could not be preprocessed: {error}"
                ) from error
        decode_s += middle - start
        preprocess_s += time.perf_counter() - middle
    child(STAGE_LATENCY, "decode", model).observe(decode_s)
    child(STAGE_LATENCY, "preprocess", model).observe(preprocess_s)
    stacked = batch[0][np.newaxis] if len(batch) == 1 else np.stack(batch)
    return stacked.astype(_NUMPY_INPUT[spec.dtype], copy=False)


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


async def _spec_and_predict(
    predictor: PredictCoalescer,
    cache: MetadataCache,
    target: Target,
    images: list[bytes],
    profile_override: str | None,
    limits: DecodeLimits,
    request_id: str,
) -> tuple[int, dict[str, np.ndarray]]:
    try:
        spec = await cache.get(target.model, target.version, target.label, request_id)
    except grpc.aio.AioRpcError as error:
        raise upstream_error(error, target, "GetModelMetadata") from error
    except ModelContractError as error:
        raise ApiError(502, "unsupported_model", str(error)) from error
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
                target.model, spec.version, spec.input_key, batch, request_id
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND and target.version is None:
                # The version that latest / the label named is gone (a newer one replaced it).
                cache.invalidate(target.model)
                raise _Stale from error
            raise upstream_error(error, target, "Predict") from error


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
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height <= _INLINE_MAX_PIXELS
    except Exception:  # undecodable: let the worker thread produce the error
        return False


class _Stale(Exception):
    pass


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
    args = (predictor, cache, target, images, profile_override, limits, request_id)
    try:
        version, outputs = await _spec_and_predict(*args)
    except _Stale:
        try:
            version, outputs = await _spec_and_predict(*args)
        except _Stale as stale:
            cause = stale.__cause__
            assert isinstance(cause, grpc.aio.AioRpcError)
            raise upstream_error(cause, target, "Predict") from cause
    with timed("postprocess", target.model):
        predictions = postprocess(outputs, top_k, len(images))
    child(CLASSIFICATIONS, target.model).inc(len(predictions))
    return {"model": target.model, "version": version, "predictions": predictions}
