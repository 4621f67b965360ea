"""REST ``:predict`` on the server's event loop, the way the gRPC front end runs ``Predict``.

A request whose model answers in about a millisecond, with a small body, while nothing else is
running, is decoded, run and encoded on the loop itself: a thread hand-off would cost as much as
the run. Otherwise the whole call (JSON decoding, the Session run, JSON encoding) goes to the REST
thread pool (``--rest_api_num_threads``), so large bodies never hold the loop and concurrent calls
run in parallel. With batching, the decoded inputs join the batch queue on the loop (a body over
``INLINE_BODY_LIMIT`` is decoded, and its answer encoded, on the REST pool) and carry the
``--rest_api_timeout_in_ms`` deadline into it, as TF Serving's ``RunOptions`` do; without
batching, a call that takes longer than that deadline answers 504 (its run still finishes before
the model version may unload).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from serving.dataplane import INLINE_RUN_LIMIT_S, DataPlane
from serving.errors import ServingError, invalid
from serving.predict import batcher, prepare, run_arrays
from serving.protocol.rest.codec import format_outputs, parse_predict_body
from serving.protocol.rest.jsontext import may_hold_booleans, parse_document

if TYPE_CHECKING:
    from serving.servable import Servable


@dataclass(frozen=True)
class Spec:
    """The model, and the version or label, that a REST path names."""

    name: str
    version: int | None
    label: str | None


# A body this small decodes in well under a millisecond; larger ones are decoded off the loop.
INLINE_BODY_LIMIT = 64 * 1024


def _decode(raw: bytes) -> tuple[Any, str, bool]:
    """The JSON body, its signature name and whether it may hold ``true`` or ``false``; a 400
    when it does not parse (bytes after the first JSON value are ignored, as in TF Serving)."""
    body = parse_document(raw)
    signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
    if not isinstance(signature_name, str):
        raise invalid("'signature_name' key must be a string value.")
    return body, signature_name, may_hold_booleans(raw)


def _decoded(servable: Servable, raw: bytes) -> tuple[str, dict[str, np.ndarray], bool]:
    """The signature name, the inputs by alias and whether the row format was used."""
    body, signature_name, bools = _decode(raw)
    signature = servable.signature(signature_name, rest=True)
    inputs, rows = parse_predict_body(body, signature, bools)
    return signature_name, inputs, rows


def _encoded(outputs: Mapping[str, np.ndarray], rows: bool) -> bytes:
    """The answer's JSON text (the C encoder: one line; TF Serving's whitespace means nothing)."""
    return json.dumps(format_outputs(outputs, rows)).encode()


def predict_now(servable: Servable, raw: bytes) -> bytes:
    """Decode, run without batching and encode, on the calling thread."""
    signature_name, inputs, rows = _decoded(servable, raw)
    return _encoded(run_arrays(servable, signature_name, inputs, []), rows)


def _release(work: asyncio.Future, servable: Servable) -> None:
    servable.release()
    if not work.cancelled():
        work.exception()  # retrieved here, so an abandoned failure is not reported as unhandled


class RestPredictor:
    def __init__(self, data_plane: DataPlane, executor: Executor, timeout: float | None):
        self.data_plane = data_plane
        self.executor = executor
        self.timeout = timeout
        self._running = 0

    async def predict(self, spec: Spec, raw: bytes) -> bytes:
        """The JSON answer of a ``:predict`` call."""
        servable = self.data_plane.resolve(spec.name, spec.version, spec.label)
        inline = (
            servable.batching is None
            and self._running == 0
            and servable.typical_run_s < INLINE_RUN_LIMIT_S
            and len(raw) <= INLINE_BODY_LIMIT
        )
        if inline:
            try:
                return predict_now(servable, raw)
            finally:
                servable.release()
        try:
            if servable.batching is not None:
                work = asyncio.ensure_future(self._batched(servable, raw))
            else:
                work = self._offloaded(servable, raw)
        except BaseException:
            servable.release()
            raise
        # Work that waits releases the version only when it has really finished, so an unload
        # never closes a Session that a pool or batch thread is still running.
        work.add_done_callback(lambda done: _release(done, servable))
        if servable.batching is not None:
            return await asyncio.shield(work)  # the batch queue enforces the deadline
        try:
            return await asyncio.wait_for(asyncio.shield(work), self.timeout)
        except TimeoutError:
            raise ServingError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Deadline exceeded: no answer within --rest_api_timeout_in_ms "
                f"({self.timeout * 1000:.0f} ms)",
            ) from None

    async def _batched(self, servable: Servable, raw: bytes) -> bytes:
        """Decode, join the batch queue on the loop, encode. A body over ``INLINE_BODY_LIMIT``
        is decoded and its answer encoded on the REST pool: on the loop, a large body held every
        other call (gRPC included) for as long as its JSON took, seconds for tens of MB."""
        loop = asyncio.get_running_loop()
        small = len(raw) <= INLINE_BODY_LIMIT
        started = loop.time()
        if small:
            signature_name, inputs, rows = _decoded(servable, raw)
        else:
            signature_name, inputs, rows = await loop.run_in_executor(
                self.executor, _decoded, servable, raw
            )
        keys = prepare(servable, signature_name, inputs, [])
        timeout = self.timeout
        if timeout is not None:  # the deadline counts from the call's start, decoding included
            timeout = max(0.0, timeout - (loop.time() - started))
        batch = batcher(servable, signature_name, keys, servable.batching)
        outputs = await batch.enqueue(inputs, timeout)
        if small:
            return _encoded(outputs, rows)
        return await loop.run_in_executor(self.executor, _encoded, outputs, rows)

    def _offloaded(self, servable: Servable, raw: bytes) -> asyncio.Future:
        self._running += 1  # counted now, so a request arriving next sees this one
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.executor, predict_now, servable, raw)

        def done(_: asyncio.Future) -> None:
            self._running -= 1

        work.add_done_callback(done)
        return work
