"""Batching parameters as TF Serving reads them, and how one loaded version batches."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

PER_MODEL_FILE = "batching_params.pbtxt"


class BatchObserver(Protocol):
    """What server-side batching reports; ``serving.metrics.Metrics`` implements it."""

    def record_queued(self, waits: list[float]) -> None:
        """Seconds each task of a batch waited in the queue."""

    def record_batch(self, model: str, size: int) -> None:
        """One batch run of ``size`` rows (after padding)."""


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    # Split a task over several batches (the first part fills the open batch); batches then hold
    # at most max_execution_batch_size rows, while max_batch_size still bounds one task.
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    observer: BatchObserver | None = None

    @property
    def batch_rows(self) -> int:
        """The most rows one batch run holds."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    @classmethod
    def from_proto(cls, params: object, observer: BatchObserver | None = None):
        def get(name: str, default: int) -> int:
            return getattr(params, name).value if params.HasField(name) else default

        config = cls(
            max_batch_size=get("max_batch_size", 1000),
            batch_timeout_micros=get("batch_timeout_micros", 0),
            max_enqueued_batches=get("max_enqueued_batches", 10),
            num_batch_threads=get("num_batch_threads", os.cpu_count() or 4),
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            enable_large_batch_splitting=bool(get("enable_large_batch_splitting", False)),
            max_execution_batch_size=get("max_execution_batch_size", 0),
            observer=observer,
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError(
                "max_batch_size, num_batch_threads and max_enqueued_batches must be positive"
            )
        if self.max_execution_batch_size < 0 or self.max_execution_batch_size > self.max_batch_size:
            raise ValueError("max_execution_batch_size must be between 1 and max_batch_size")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "The largest entry in allowed_batch_sizes must be equal to max_batch_size"
                )


class Batching(NamedTuple):
    """Batching parameters and the event loop the batch queues live on."""

    config: BatchingConfig
    loop: asyncio.AbstractEventLoop


def version_batching(path: Path, common: Batching | None, per_model: bool) -> Batching | None:
    """How one loaded version batches, as TF Serving decides it: not at all without
    ``--enable_batching``; with ``--enable_per_model_batching_parameters``, by the version's own
    ``batching_params.pbtxt`` (no file: no batching), keeping the server's thread count; else by
    the server's parameters. A file that does not parse fails the version's load."""
    if common is None or not per_model:
        return common
    file = path / PER_MODEL_FILE
    if not file.exists():
        return None
    from serving.config_files import read_batching_parameters

    config = BatchingConfig.from_proto(read_batching_parameters(file), common.config.observer)
    threads = common.config.num_batch_threads
    return Batching(dataclasses.replace(config, num_batch_threads=threads), common.loop)
