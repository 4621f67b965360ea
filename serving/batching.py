"""Server-side batching: concurrent Predict calls on one model version and signature run as one.

Semantics follow TF Serving's ``BatchingParameters``: a batch closes when it holds
``max_batch_size`` rows or ``batch_timeout_micros`` after its first task arrived; at most
``max_enqueued_batches`` batches wait (more is ``UNAVAILABLE``, never an unbounded queue);
``num_batch_threads`` batches run at once; with ``allowed_batch_sizes`` a batch is padded up to the
next allowed size (with copies of its first row) and the padding is sliced off the results. With
``enable_large_batch_splitting`` a task that does not fit the open batch is split: its first part
fills that batch, the rest goes into batches of ``max_execution_batch_size`` rows, and the caller
gets its rows back joined in order.

The queue lives on the server's event loop: enqueueing, closing batches and handing results back
are loop callbacks, and only the Session run of a whole batch goes to one of the batch threads.
So a request costs no thread wake-up of its own, which is what makes batching pay off when
Python's per-request cost is of the same order as the model's.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import grpc
import numpy as np

from serving.batching_config import Batching, BatchingConfig
from serving.errors import ServingError, invalid, unavailable
from serving.servable import Servable

_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    rows: int
    shapes: tuple
    arrived: float
    deadline: float | None  # on the loop's clock; None: the caller set none
    future: asyncio.Future = field(repr=False)


class Batcher:
    """One queue per model version, signature and output set; every method except ``submit``
    and ``stop`` runs on ``loop``."""

    def __init__(
        self,
        servable: Servable,
        signature: str,
        output_keys: list[str],
        config: BatchingConfig,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.servable = servable
        self.signature = signature
        self.output_keys = output_keys
        self.config = config
        self.loop = loop
        self._queue: deque[_Task] = deque()
        self._rows = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._threads = ThreadPoolExecutor(
            config.num_batch_threads, thread_name_prefix=f"batch-{servable.name}"
        )

    # --- entry points -----------------------------------------------------------------------
    def enqueue(
        self, inputs: Mapping[str, np.ndarray], timeout: float | None = None
    ) -> asyncio.Future:
        """Queue a task (on the loop); the future resolves to this task's rows of the outputs.

        ``timeout``: seconds the caller still waits (its gRPC deadline, the REST timeout).
        """
        sizes = {key: (a.shape[0] if a.ndim else None) for key, a in inputs.items()}
        if None in sizes.values():
            raise invalid("Batching Run() input tensors must have at least one dimension")
        if len(set(sizes.values())) > 1:
            raise invalid(
                f"Batching Run() input tensors must have equal 0th-dimension size: {sizes}"
            )
        rows = next(iter(sizes.values()), 0)
        if rows > self.config.max_batch_size:
            raise invalid(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self.config.max_batch_size}"
            )
        if self._stopped:
            raise unavailable("the model version is being unloaded")
        cap = self.config.batch_rows
        if math.ceil((self._rows + rows) / cap) > self.config.max_enqueued_batches:
            raise unavailable(_FULL)
        shapes = tuple(sorted((k, a.shape[1:]) for k, a in inputs.items()))
        deadline = None if timeout is None else self.loop.time() + timeout
        room = cap - self._rows % cap  # left in the batch that is filling
        if rows <= room or not self.config.enable_large_batch_splitting:
            future = self._add(inputs, rows, shapes, deadline)
        else:
            parts, start = [], 0
            while start < rows:
                size = min(room if start == 0 else cap, rows - start)
                part = {key: array[start : start + size] for key, array in inputs.items()}
                parts.append(self._add(part, size, shapes, deadline))
                start += size
            future = self._joined(parts)
        future.add_done_callback(partial(self._record_run, self.loop.time()))
        return future

    def _record_run(self, queued_at: float, done: asyncio.Future) -> None:
        """As TF Serving times a batching session's Run: per request, its wait plus its batch's
        run, successful ones only."""
        if not done.cancelled() and done.exception() is None:
            self.servable.record_run(self.loop.time() - queued_at)

    def _add(
        self, inputs: Mapping[str, np.ndarray], rows: int, shapes: tuple, deadline: float | None
    ) -> asyncio.Future:
        task = _Task(inputs, rows, shapes, self.loop.time(), deadline, self.loop.create_future())
        self._queue.append(task)
        self._rows += rows
        self._dispatch()
        return task.future

    def _joined(self, parts: list[asyncio.Future]) -> asyncio.Future:
        """One future for a split task: its parts' outputs joined in order, or the first error."""
        joined = self.loop.create_future()
        gathered = asyncio.gather(*parts, return_exceptions=True)

        def finish(done: asyncio.Future) -> None:
            if joined.done():
                return
            if done.cancelled():
                joined.cancel()
                return
            results = done.result()
            error = next((r for r in results if isinstance(r, BaseException)), None)
            if error is not None:
                joined.set_exception(error)
                return
            joined.set_result({k: np.concatenate([r[k] for r in results]) for k in results[0]})

        gathered.add_done_callback(finish)
        joined.add_done_callback(lambda done: gathered.cancel() if done.cancelled() else None)
        return joined

    def submit(
        self, inputs: Mapping[str, np.ndarray], timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Queue from another thread (the REST server) and wait for the outputs."""

        async def queued() -> dict[str, np.ndarray]:
            return await self.enqueue(inputs, timeout)

        return asyncio.run_coroutine_threadsafe(queued(), self.loop).result()

    def stop(self) -> None:
        """Called when the version unloads, after its requests finished."""
        self._stopped = True
        self._threads.shutdown(wait=True)

    # --- scheduling on the loop -------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start every batch that is ready while a batch thread is free; else arm the timer."""
        max_rows = self.config.batch_rows
        while self._queue and self._running < self.config.num_batch_threads:
            deadline = self._queue[0].arrived + self.config.batch_timeout_micros / 1e6
            if self._rows < max_rows and self.loop.time() < deadline and not self._stopped:
                if self._timer is None:
                    self._timer = self.loop.call_at(deadline, self._on_timer)
                return
            batch = self._take()
            if self._expired(batch):
                continue
            try:
                work = self.loop.run_in_executor(self._threads, self._run, batch)
            except RuntimeError:  # the batch threads were shut down: the version is unloading
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(unavailable("the model version was unloaded"))
                continue
            self._running += 1
            work.add_done_callback(lambda done, batch=batch: self._finished(batch, done))

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self) -> list[_Task]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [self._queue.popleft()]
        total = batch[0].rows
        while (
            self._queue
            and total + self._queue[0].rows <= self.config.batch_rows
            and self._queue[0].shapes == batch[0].shapes
        ):
            task = self._queue.popleft()
            batch.append(task)
            total += task.rows
        self._rows -= total
        if self.config.observer is not None:
            now = self.loop.time()
            self.config.observer.record_queued([now - task.arrived for task in batch])
        return batch

    def _expired(self, batch: list[_Task]) -> bool:
        """As in TF Serving, a batch whose every caller is past its deadline (or gone) is not
        run; its tasks fail with RESOURCE_EXHAUSTED, so an overloaded queue drains quickly."""
        now = self.loop.time()
        if not all(
            task.future.done() or (task.deadline is not None and task.deadline <= now)
            for task in batch
        ):
            return False
        error = ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Run() timeout exceeded while waiting in batching queue",
        )
        for task in batch:
            if not task.future.done():
                task.future.set_exception(error)
        return True

    def _finished(self, batch: list[_Task], done: asyncio.Future) -> None:
        self._running -= 1
        error = unavailable("the batch was cancelled") if done.cancelled() else done.exception()
        if error is not None and not isinstance(error, ServingError):
            error = ServingError(grpc.StatusCode.INTERNAL, f"batch run failed: {error}")
        results = done.result() if error is None else [None] * len(batch)
        for task, result in zip(batch, results, strict=True):
            if task.future.done():  # the caller went away
                continue
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(result)
        self._dispatch()

    # --- the batch thread -------------------------------------------------------------------
    def _run(self, batch: list[_Task]) -> list[dict[str, np.ndarray]]:
        total = sum(task.rows for task in batch)
        size = next((s for s in self.config.allowed_batch_sizes if s >= total), total)
        merged = {}
        for key in batch[0].inputs:
            parts = [task.inputs[key] for task in batch]
            if size > total:
                parts.append(np.repeat(parts[0][:1], size - total, axis=0))
            merged[key] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        outputs = self.servable.run(self.signature, merged, self.output_keys, timed=False)
        if self.config.observer is not None:
            self.config.observer.record_batch(self.servable.name, size)
        for key, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != size:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor '{key}' has 0th-dimension size "
                    f"{array.shape[0] if array.ndim else 'scalar'}, expected {size}",
                )
        results, offset = [], 0
        for task in batch:
            results.append({k: a[offset : offset + task.rows] for k, a in outputs.items()})
            offset += task.rows
        return results


_create_lock = threading.Lock()


def batcher_for(
    servable: Servable,
    signature: str,
    output_keys: list[str],
    batching: Batching,
) -> Batcher:
    key = (signature, *output_keys)
    batcher = servable.batchers.get(key)
    if batcher is None:
        with _create_lock:
            batcher = servable.batchers.get(key)
            if batcher is None:
                batcher = Batcher(servable, signature, output_keys, *batching)
                servable.batchers[key] = batcher
    return batcher
