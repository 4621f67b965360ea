"""Server-side batching: concurrent Predict calls on one model version and signature run as one.

Semantics follow TF Serving's ``BatchingParameters``: a batch closes when it holds
``max_batch_size`` rows or ``batch_timeout_micros`` after its first task arrived; at most
``max_enqueued_batches`` batches wait (more is ``UNAVAILABLE``, never an unbounded queue);
``num_batch_threads`` batches run at once; with ``allowed_batch_sizes`` a batch is padded up to the
next allowed size (with copies of its first row) and the padding is sliced off the results.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from serving.errors import ServingError, invalid, unavailable
from serving.servable import Servable

_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    on_batch: Callable[[str, int], None] | None = None

    @classmethod
    def from_proto(cls, params: object, on_batch: Callable[[str, int], None] | None = None):
        def get(name: str, default: int) -> int:
            return getattr(params, name).value if params.HasField(name) else default

        import os

        config = cls(
            max_batch_size=get("max_batch_size", 1000),
            batch_timeout_micros=get("batch_timeout_micros", 0),
            max_enqueued_batches=get("max_enqueued_batches", 10),
            num_batch_threads=get("num_batch_threads", os.cpu_count() or 4),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            on_batch=on_batch,
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError(
                "max_batch_size, num_batch_threads and max_enqueued_batches must be positive"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "The largest entry in allowed_batch_sizes must be equal to max_batch_size"
                )


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    rows: int
    shapes: tuple
    arrived: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(
        self, servable: Servable, signature: str, output_keys: list[str], config: BatchingConfig
    ) -> None:
        self.servable = servable
        self.signature = signature
        self.output_keys = output_keys
        self.config = config
        self._queue: deque[_Task] = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{servable.name}-{i}", daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        shapes = tuple(sorted((k, a.shape[1:]) for k, a in inputs.items()))
        task = _Task(inputs=inputs, rows=rows, shapes=shapes)
        with self._cond:
            if self._stopped:
                raise unavailable("the model version is being unloaded")
            needed = math.ceil((self._rows + rows) / self.config.max_batch_size)
            if needed > self.config.max_enqueued_batches:
                raise unavailable(_FULL)
            self._queue.append(task)
            self._rows += rows
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def _take(self) -> list[_Task] | None:
        timeout = self.config.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._queue or self._stopped)
                if not self._queue:
                    return None
                deadline = self._queue[0].arrived + timeout
                while self._queue and self._rows < self.config.max_batch_size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopped:
                        break
                    self._cond.wait(remaining)
                if not self._queue:
                    continue
                batch = [self._queue.popleft()]
                total = batch[0].rows
                while (
                    self._queue
                    and total + self._queue[0].rows <= self.config.max_batch_size
                    and self._queue[0].shapes == batch[0].shapes
                ):
                    task = self._queue.popleft()
                    batch.append(task)
                    total += task.rows
                self._rows -= total
                if self._queue:
                    self._cond.notify()
                return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as error:
                failure = (
                    error
                    if isinstance(error, ServingError)
                    else ServingError(grpc.StatusCode.INTERNAL, f"batch run failed: {error}")
                )
                for task in batch:
                    task.error = failure
            for task in batch:
                task.done.set()

    def _run(self, batch: list[_Task]) -> None:
        total = sum(task.rows for task in batch)
        size = next((s for s in self.config.allowed_batch_sizes if s >= total), total)
        merged = {}
        for key in batch[0].inputs:
            parts = [task.inputs[key] for task in batch]
            if size > total:
                parts.append(np.repeat(parts[0][:1], size - total, axis=0))
            merged[key] = np.concatenate(parts, axis=0)
        outputs = self.servable.run(self.signature, merged, self.output_keys)
        if self.config.on_batch is not None:
            self.config.on_batch(self.servable.name, size)
        for key, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != size:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor '{key}' has 0th-dimension size "
                    f"{array.shape[0] if array.ndim else 'scalar'}, expected {size}",
                )
        offset = 0
        for task in batch:
            task.result = {k: a[offset : offset + task.rows] for k, a in outputs.items()}
            offset += task.rows


_create_lock = threading.Lock()


def batcher_for(
    servable: Servable, signature: str, output_keys: list[str], config: BatchingConfig
) -> Batcher:
    key = f"{signature}\0{','.join(output_keys)}"
    batcher = servable.batchers.get(key)
    if batcher is None:
        with _create_lock:
            batcher = servable.batchers.get(key)
            if batcher is None:
                batcher = Batcher(servable, signature, output_keys, config)
                servable.batchers[key] = batcher
    return batcher
