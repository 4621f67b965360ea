"""Concurrent classify requests for the same model version share one Predict.

The model server costs about as much per call as per image for small models, and so does the
gateway's gRPC client; under load most of the work of a single-image request is the call itself.
Requests whose tensors have the same model, version, input name, dtype and row shape therefore
wait in one lane. While the lane has fewer than ``max_in_flight`` Predicts running, a request is
sent at once (nothing is added at low load); otherwise it waits, and when a Predict returns the
waiting requests go out together, up to ``max_batch`` rows, and each gets its own rows back.

There is no timer: batches form only from requests that arrived while earlier ones were running,
as with TF Serving's batching at ``batch_timeout_micros: 0`` (and KServe's batcher, without its
wait). A failed Predict fails every request in it with the same error, except INVALID_ARGUMENT for a
merged one (a batch above the model server's ``max_batch_size``, which no caller asked for): the
callers are then answered by api.coalesce_split, which sends them again in parts and learns a cap
that later merges stay under. A caller already past its deadline is not sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from api.coalesce_split import Outputs, Splitter, deadline_exceeded, deliver, fail
from api.coalesce_split import Waiting as _Waiting
from api.metrics import PREDICT_CALL_REQUESTS, child
from api.serving_client import ServingClient

_LaneKey = tuple[str, int, str, str, tuple[int, ...]]
MAX_ID_HEADER = 1024


@dataclass
class _Lane:
    in_flight: int = 0
    waiting: deque[_Waiting] = field(default_factory=deque)


class PredictCoalescer:
    def __init__(self, client: ServingClient, max_batch: int, max_in_flight: int) -> None:
        """``max_in_flight`` 0: no limit, so every request is sent at once and none merge."""
        self.client = client
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight or 2**31
        self._lanes: dict[_LaneKey, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._split = Splitter(self._predict)
        self._caps = self._split.caps  # rows per merged Predict a lane's key is known to take

    async def predict(
        self,
        model: str,
        version: int,
        input_key: str,
        batch: np.ndarray,
        request_id: str,
        deadline: float | None = None,
    ) -> tuple[int, Outputs]:
        """Predict ``batch`` (``[N, ...]``) with ``model`` at ``version``, alone or with others.

        ``deadline``: the request's deadline (``time.monotonic()``): a waiting request past it is
        not sent, and the parts of a refused merged Predict wait no longer for it; None: the
        client's timeout from now.
        """
        key = (model, version, input_key, batch.dtype.str, batch.shape[1:])
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        if lane.in_flight < self.max_in_flight and not lane.waiting:
            # Free capacity: this request goes now, alone, from its own caller's task.
            lane.in_flight += 1
            return await self._call(key, lane, [batch], [request_id])
        future: asyncio.Future[tuple[int, Outputs]] = asyncio.get_running_loop().create_future()
        if deadline is None:
            deadline = time.monotonic() + self.client.timeout_s
        lane.waiting.append(_Waiting(batch, request_id, future, deadline))
        try:
            return await future
        finally:
            # The error the future may hold has this frame in its traceback: holding the future
            # too made a cycle that kept the request's frames, and its body, until a collection.
            del future

    def _dispatch(self, key: _LaneKey, lane: _Lane) -> None:
        """Send what waits in ``lane`` while it has capacity; forget the lane once it is idle."""
        while lane.waiting and lane.in_flight < self.max_in_flight:
            group = self._take(key, lane)
            if not group:
                break
            lane.in_flight += 1  # now, so this loop sees it before the task starts
            task = asyncio.ensure_future(self._send(key, lane, group))
            self._tasks.add(task)  # a strong reference until it is done
            task.add_done_callback(self._tasks.discard)
        if not lane.waiting and lane.in_flight == 0:
            self._lanes.pop(key, None)

    def _take(self, key: _LaneKey, lane: _Lane) -> list[_Waiting]:
        limit = self._caps.get(key, self.max_batch)
        now = time.monotonic()  # one clock read per merged Predict
        group: list[_Waiting] = []
        rows = 0
        while lane.waiting:
            item = lane.waiting[0]
            if item.future.done():  # its caller gave up (disconnected, cancelled)
                lane.waiting.popleft()
                continue
            if item.deadline <= now:
                fail([lane.waiting.popleft()], deadline_exceeded())
                continue
            if group and rows + len(item.batch) > limit:
                break
            group.append(lane.waiting.popleft())
            rows += len(item.batch)
        return group

    async def _call(
        self, key: _LaneKey, lane: _Lane, batches: list[np.ndarray], request_ids: list[str]
    ) -> tuple[int, Outputs]:
        """One Predict of ``batches`` (already counted in flight); then the lane's next ones."""
        model, version, input_key = key[0], key[1], key[2]
        try:
            child(PREDICT_CALL_REQUESTS, model).observe(len(batches))
            batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
            return await self.client.predict(
                model, {input_key: batch}, version=version, request_id=joined_ids(request_ids)
            )
        finally:
            lane.in_flight -= 1
            self._dispatch(key, lane)

    def _predict(self, key: _LaneKey, group: list[_Waiting]) -> Coroutine[Any, Any, Any]:
        """The Predict call of ``group``'s rows, concatenated in its order."""
        batches = [item.batch for item in group]
        child(PREDICT_CALL_REQUESTS, key[0]).observe(len(batches))
        batch = batches[0] if len(batches) == 1 else np.concatenate(batches)
        ids = joined_ids([item.request_id for item in group])
        return self.client.predict(key[0], {key[2]: batch}, version=key[1], request_id=ids)

    def _release(self, key: _LaneKey, lane: _Lane) -> None:
        lane.in_flight -= 1
        self._dispatch(key, lane)

    async def _send(self, key: _LaneKey, lane: _Lane, group: list[_Waiting]) -> None:
        """Predict a waiting group together and hand each caller its own rows (or the error)."""
        held = True
        try:
            try:
                served, outputs = await self._predict(key, group)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                # The lane's slot is kept while the group is split, so what waits meanwhile
                # goes out under the cap the split teaches.
                await self._split.refused(key, group, error)
                # This frame is in that error's traceback, and it is the context of the errors
                # the split's Predicts raise: the group, whose futures hold them, goes first.
                del group
                return
            # The next Predict goes out before these callers resume, as the server is idle.
            held = False
            self._release(key, lane)
            deliver(group, served, outputs)
        except asyncio.CancelledError:  # the gateway is shutting down
            for item in group:
                item.future.cancel()
            raise
        except Exception as error:
            if held:
                held = False
                self._release(key, lane)
            fail(group, error)
            # This frame is in the error's traceback, and so are the callers' once they raise it:
            # the group, whose futures hold the error, must not be held here as well.
            del group
        finally:
            if held:
                self._release(key, lane)


def joined_ids(ids: list[str], limit: int = MAX_ID_HEADER) -> str:
    """The request ids of a merged Predict as one comma-separated header value (as HTTP joins a
    repeated header), cut short with ``+N`` beyond ``limit`` characters: gRPC refuses a call whose
    metadata exceeds its header limit (8 KiB by default), and 64 ids of 128 characters would."""
    kept: list[str] = []
    length = 0
    for index, request_id in enumerate(ids):
        length += len(request_id) + (1 if kept else 0)
        if length > limit and kept:
            return ",".join(kept) + f",+{len(ids) - index}"
        kept.append(request_id)
    return ",".join(kept)
