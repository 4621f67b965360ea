"""Merged Predicts the model server refused as INVALID_ARGUMENT (api.coalesce), sent again in parts.

A model server with batching refuses a batch above its ``max_batch_size``, which no caller asked
for. TF Serving and ours say so in the same words ("Task size 56 is larger than maximum input
batch size 8"): that size becomes the lane key's cap at once, and the group is sent again in parts
within it (a caller over it alone, for its own verdict). A refusal without those words is split in
halves; both halves working teach the cap (the larger half). One refused half while the other
worked holds a bad caller: it is split again. Both halves refused (or two parts of a group within a
cap) is not about size: the model refuses these inputs, so the split stops and the rest of the
group gets the refusal, a few Predicts per group rather than two per caller. A group within a
known cap is not split at all. Caps only go down, until the model version changes or the gateway
restarts; the ``MAX_CAPS`` learned (or lowered) most recently are kept.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from api.metrics import PREDICT_SPLITS, child

Outputs = dict[str, np.ndarray]
MAX_CAPS = 256
# TF Serving's batch scheduler (shared_batch_scheduler.h) and serving/batching.py alike.
_TOO_LARGE = re.compile(r"Task size (\d+) is larger than maximum input batch size (\d+)")


@dataclass
class Waiting:
    batch: np.ndarray
    request_id: str
    future: asyncio.Future[tuple[int, Outputs]]
    deadline: float  # time.monotonic() past which the caller no longer waits


Key = tuple[Any, ...]  # a lane's key: model, version, input name, dtype, row shape
Send = Callable[[Key, list[Waiting]], Awaitable[tuple[int, Outputs]]]


class Splitter:
    """Answers the callers of refused merged Predicts and keeps each lane key's cap."""

    def __init__(self, send: Send) -> None:
        self._send = send  # one Predict of a group's rows
        self.caps: dict[Key, int] = {}  # rows per Predict a lane key is known to take

    async def refused(self, key: Key, group: list[Waiting], error: grpc.aio.AioRpcError) -> None:
        """Answer every caller of ``group``, which the server refused as one Predict."""
        rows = rows_of(group)
        limit = size_limit(error, rows)
        if limit is not None:
            self.learn(key, limit)
        cap = self.caps.get(key)
        if len(group) == 1 or (cap is not None and rows <= cap):  # its own verdict, or not size
            fail(group, error)
            return
        child(PREDICT_SPLITS, key[0]).inc()
        if cap is None:
            await self._send_parts(key, halves(group), halved=True)
        else:
            await self._send_parts(key, within(group, cap), halved=False)

    async def _send_parts(self, key: Key, parts: list[list[Waiting]], halved: bool) -> None:
        worked: list[int] = []
        refused: list[tuple[list[Waiting], grpc.aio.AioRpcError]] = []
        for index, part in enumerate(parts):
            outcome = await self._resend(key, part)
            if isinstance(outcome, int):
                worked.append(outcome)
            elif outcome is not None:
                refused.append((part, outcome))
                if len(refused) == 2:  # not about size: the model refuses these inputs
                    for each, error in refused:
                        fail(each, error)
                    fail([item for rest in parts[index + 1 :] for item in rest], outcome)
                    return
        if halved and len(worked) == 2:
            self.learn(key, max(1, *worked))
        for part, error in refused:  # its siblings worked: a bad caller is in it
            rest = [item for item in part if not item.future.done()]
            if rest:
                await self.refused(key, rest, error)

    async def _resend(self, key: Key, part: list[Waiting]) -> int | grpc.aio.AioRpcError | None:
        """Send ``part`` again within each caller's own deadline. Returns the rows of the Predict
        that worked, or the refusal of several callers (not answered yet) that is not about size;
        None when the part was answered otherwise."""
        now = time.monotonic()
        fail([item for item in part if item.deadline <= now], deadline_exceeded())
        live = [item for item in part if not item.future.done()]
        if not live:
            return None
        cap = self.caps.get(key)
        if len(live) > 1 and cap is not None and rows_of(live) > cap:  # learned since formed
            await self._send_parts(key, within(live, cap), halved=False)
            return None
        # The call waits for the latest deadline; each earlier one fails only its own caller.
        loop = asyncio.get_running_loop()
        latest = max(item.deadline for item in live)
        timers = [
            loop.call_later(item.deadline - now, _expire, item)
            for item in live
            if item.deadline < latest
        ]
        try:
            # Not asyncio.wait_for: its frame, in the traceback of the error the call raises,
            # holds the task that holds that error, a cycle with the callers' frames and bodies.
            async with asyncio.timeout(latest - now):
                served, outputs = await self._send(key, live)
        except TimeoutError:
            fail(live, deadline_exceeded())
            return None
        except grpc.aio.AioRpcError as error:
            try:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    fail(live, error)
                    return None
                if size_limit(error, rows_of(live)) is not None:  # too large after all
                    await self.refused(key, live, error)
                    return None
                if len(live) == 1:  # its own verdict
                    fail(live, error)
                return error
            finally:
                # This frame is in the error's traceback: holding the callers too (whose futures
                # hold it) made a cycle that kept their requests' bodies until a collection.
                del part, live
        finally:
            for timer in timers:
                timer.cancel()
        deliver(live, served, outputs)
        return rows_of(live)

    def learn(self, key: Key, cap: int) -> None:
        known = self.caps.pop(key, None)
        self.caps[key] = cap if known is None else min(cap, known)
        if len(self.caps) > MAX_CAPS:  # the one learned (or lowered) longest ago goes
            del self.caps[next(iter(self.caps))]


def size_limit(error: grpc.aio.AioRpcError, rows: int) -> int | None:
    """The server's ``max_batch_size`` if ``error`` refused ``rows`` rows for being above it."""
    match = _TOO_LARGE.search(error.details() or "")
    if match is None or int(match[1]) != rows:
        return None
    limit = int(match[2])
    return limit if 1 <= limit < rows else None


def halves(group: list[Waiting]) -> list[list[Waiting]]:
    """``group`` in two parts by rows (each caller's rows in one part), by callers if none."""
    parts = within(group, (rows_of(group) + 1) // 2)
    if len(parts) > 2:  # a large caller in the middle: keep to two parts
        parts = [parts[0], [item for part in parts[1:] for item in part]]
    elif len(parts) == 1:
        parts = [group[: len(group) // 2], group[len(group) // 2 :]]
    return parts


def within(group: list[Waiting], limit: int) -> list[list[Waiting]]:
    """``group`` in order, in parts of at most ``limit`` rows (a caller over it alone)."""
    parts: list[list[Waiting]] = [[]]
    rows = 0
    for item in group:
        if parts[-1] and rows + len(item.batch) > limit:
            parts.append([])
            rows = 0
        parts[-1].append(item)
        rows += len(item.batch)
    return parts


def rows_of(group: list[Waiting]) -> int:
    return sum(len(item.batch) for item in group)


def deliver(group: list[Waiting], served: int, outputs: Outputs) -> None:
    total = rows_of(group)
    start = 0
    for item in group:
        end = start + len(item.batch)
        if not item.future.done():
            item.future.set_result((served, _rows(outputs, start, end, total)))
        start = end


def fail(group: list[Waiting], error: BaseException) -> None:
    for item in group:
        if not item.future.done():
            item.future.set_exception(error)


def _expire(item: Waiting) -> None:
    fail([item], deadline_exceeded())


def deadline_exceeded() -> grpc.aio.AioRpcError:
    """What a caller past its deadline gets (as a call past its gRPC deadline would)."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="the request's deadline passed before its Predict was answered",
    )


def _rows(outputs: Outputs, start: int, end: int, total: int) -> Outputs:
    """Rows ``start:end`` of every batched output; an output without a batch axis as it is."""
    return {
        name: array[start:end] if array.ndim and len(array) == total else array
        for name, array in outputs.items()
    }
