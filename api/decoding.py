"""A request's images to a model's input batch within the pixel limits, in worker threads: header
reads, the decode budget, decoding and preprocessing (timed)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.budget import Budget
from api.errors import ApiError
from api.image_decode import decode_image
from api.image_open import DEFAULT_MAX_PIXELS, decode_cost, open_image
from api.input_spec import InputSpec
from api.metrics import STAGE_LATENCY, child
from api.preprocess import decode_size, preprocess
from fdl.images import WorkSize

if TYPE_CHECKING:
    from api.settings import GatewaySettings

# The input side assumed when a model's signature leaves height or width unknown.
_DEFAULT_SIDE = 28
_NUMPY_INPUT = {"DT_UINT8": np.uint8, "DT_FLOAT": np.float32, "DT_HALF": np.float16}
_Result = TypeVar("_Result")


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


@dataclass(frozen=True)
class _Opened:
    """A request's images, opened (headers read, nothing decoded), and the largest's cost."""

    images: list[Image.Image]
    largest: int


def _open_within_limits(
    images: list[bytes], work: WorkSize, limits: DecodeLimits
) -> list[Image.Image]:
    """Open every image (each within the per-image limit), then check the request's total."""
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
    return opened


def _open_or_prepare(
    images: list[bytes], spec: InputSpec, profile: str, limits: DecodeLimits, model: str
) -> np.ndarray | _Opened:
    """In a worker thread: the batch when the images need none of the budget, else the opened
    images for the event loop to take their share."""
    opened = _open_within_limits(images, decode_size(profile, _input_size(spec)), limits)
    largest = max(decode_cost(image) for image in opened)
    if largest <= limits.free_pixels:
        return prepare_batch(opened, spec, profile, limits.max_pixels, model)
    return _Opened(opened, largest)


def _outcome(func: Callable[[], _Result]) -> tuple[_Result | None, Exception | None]:
    try:
        return func(), None
    except Exception as error:
        return None, error


async def _in_worker_thread(func: Callable[[], _Result]) -> _Result:
    """``func()`` in a worker thread; what it raises is raised here, its traceback that of the
    worker thread's frames (and this request's, as it goes up).

    An error raised through ``run_in_threadpool`` came back with anyio's frame that awaited it in
    its traceback; that frame holds the Future, and the Future the error: a reference cycle that
    kept the request's frames, and its body (up to 10 MB, twice that for a multipart body),
    until a full collection, for every image refused (422, 413, 415). Handed back as a value,
    the error is in no Future when raised, and freed once answered."""
    result, error = await run_in_threadpool(_outcome, func)
    if error is not None:
        try:
            raise error
        finally:
            del error  # this frame, in the error's traceback, must not hold it either
    return result  # type: ignore[return-value]  # None only with an error


async def prepare_bounded(
    images: list[bytes], spec: InputSpec, profile: str, limits: DecodeLimits, model: str
) -> np.ndarray:
    """prepare_batch in a worker thread, within the pixel limits and the process's budget.

    Headers are read first (no pixel is decoded), in the worker thread too, to learn what
    decoding will cost: a request of 64 hostile headers must not hold the event loop. Images
    that need none of the budget decode in the same thread hop; the others decode after the
    request has taken its share. The images of a request decode one after another, so the
    request holds its largest image's share.
    """
    result = await _in_worker_thread(
        functools.partial(_open_or_prepare, images, spec, profile, limits, model)
    )
    if isinstance(result, np.ndarray):
        return result
    prepare = functools.partial(
        prepare_batch, result.images, spec, profile, limits.max_pixels, model
    )
    async with limits.budget.share(result.largest):
        return await _in_worker_thread(prepare)


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
