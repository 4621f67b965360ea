"""Prometheus metrics under TF Serving's names, served at the monitoring config's path.

As TF Serving records them: ``:tensorflow:serving:request_count`` {model_name, status} counts
``Predict`` calls and REST requests, exported without the ``_total`` suffix;
``:tensorflow:serving:request_latency`` {model_name, API, entrypoint} is a histogram in
microseconds of the successful ones (API ``Predict`` over gRPC, ``predict``, ``metadata`` or ``""``
(status) over REST); ``:tensorflow:serving:runtime_latency`` {model_name, API, runtime} times
each request's Session run (runtime ``TF1``; with batching its queue wait plus its batch's run).

Warmup, once per loaded version that has a warmup file:
``:tensorflow:serving:model_warmup_latency`` {model_path, status} (microseconds) and
``:tensorflow:serving:model_warmup_records_read`` {model_path, status}. Server-side batching:
``:tensorflow:serving:batching_session:wrapped_run_count`` (batch runs) and
``:tensorflow:serving:batching_session:queuing_latency`` {thread_pool_name} (microseconds each task
waited; the model server's pool name is ``""``). Ours:
``:tensorflow:serving:batching_session:processed_batch_size`` {model_name}.

SavedModel loads, as TensorFlow's C++ loader (which TF Serving calls) counts them:
``:tensorflow:cc:saved_model:load_attempt_count`` {model_path, status} (``success`` or ``fail``)
and ``:tensorflow:cc:saved_model:load_latency`` {model_path}, the microseconds of every attempt
added up (a counter); ``model_path`` is the version directory.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import Metric

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS = ":tensorflow:serving:model_warmup_records_read"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
BATCH_RUNS = ":tensorflow:serving:batching_session:wrapped_run_count"
QUEUING_LATENCY = ":tensorflow:serving:batching_session:queuing_latency"
LOAD_ATTEMPTS = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
_QUEUING_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))


class _Counter:
    """A counter exported as TF Serving exports its counters: without the ``_total`` suffix."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, *values: str, amount: float = 1) -> None:
        with self._lock:
            self._counts[values] += amount

    def collect(self) -> Iterator[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        with self._lock:
            for values, value in sorted(self._counts.items()):
                metric.add_sample(self.name, dict(zip(self.labels, values, strict=True)), value)
        yield metric


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counts = self._counter(
            REQUEST_COUNT, "The total number of requests.", "model_name", "status"
        )
        self._warmup_records = self._counter(
            WARMUP_RECORDS,
            "Total number of warmup records read during model warmup.",
            "model_path",
            "status",
        )
        self._batch_runs = self._counter(
            BATCH_RUNS, "Total count of run calls on the wrapped session"
        )
        self._load_attempts = self._counter(
            LOAD_ATTEMPTS,
            "The number of times a SavedModel was successfully loaded.",  # TensorFlow's text
            "model_path",
            "status",
        )
        self._load_latency = self._counter(
            LOAD_LATENCY,
            "Latency in microseconds for SavedModels that were successfully loaded.",
            "model_path",
        )
        self._latency = self._histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            _LATENCY_BUCKETS_US,
            "model_name",
            "API",
            "entrypoint",
        )
        self._runtime = self._histogram(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            _LATENCY_BUCKETS_US,
            "model_name",
            "API",
            "runtime",
        )
        # ``labels()`` validates and locks on every call: each label set is looked up once.
        self._children: dict[tuple[Histogram, tuple[str, ...]], Histogram] = {}
        self._batch = self._histogram(
            BATCH_SIZE,
            "Rows per batch run by server-side batching (after padding).",
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            "model_name",
        )
        self._queuing = self._histogram(
            QUEUING_LATENCY,
            "Distribution of wall time spent (in microseconds) in queuing",
            _QUEUING_BUCKETS_US,
            "thread_pool_name",
        )
        self._warmup = self._histogram(
            WARMUP_LATENCY,
            "Distribution of wall time (in microseconds) for warming up the model.",
            _LATENCY_BUCKETS_US,
            "model_path",
            "status",
        )

    def _histogram(
        self, name: str, documentation: str, buckets: Sequence[float], *labels: str
    ) -> Histogram:
        return Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)

    def _counter(self, name: str, documentation: str, *labels: str) -> _Counter:
        counter = _Counter(name, documentation, labels)
        self.registry.register(counter)
        return counter

    def record(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        self._counts.inc(model, status)
        if status != "OK":
            return
        self._child(self._latency, model, api, entrypoint).observe(seconds * 1e6)

    def record_run(self, model: str, seconds: float) -> None:
        """One successful Predict's Session run of ``model`` (with batching: wait and run)."""
        self._child(self._runtime, model, "Predict", "TF1").observe(seconds * 1e6)

    def _child(self, histogram: Histogram, *labels: str) -> Histogram:
        child = self._children.get((histogram, labels))
        if child is None:
            child = self._children[(histogram, labels)] = histogram.labels(*labels)
        return child

    def record_batch(self, model: str, size: int) -> None:
        """One batch run of ``size`` rows (after padding)."""
        self._child(self._batch, model).observe(size)
        self._batch_runs.inc()

    def record_queued(self, waits: list[float]) -> None:
        """Seconds each task of a batch waited in the queue (also for a batch that is dropped)."""
        histogram = self._child(self._queuing, "")
        for seconds in waits:
            histogram.observe(seconds * 1e6)

    def record_warmup(self, model_path: str, seconds: float, records: int) -> None:
        """A successful warmup of the version at ``model_path`` (TF Serving's status "OK")."""
        self._child(self._warmup, model_path, "OK").observe(seconds * 1e6)
        self._warmup_records.inc(model_path, "OK", amount=records)

    def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
        """One SavedModel load attempt of the version at ``model_path`` (warmup not included)."""
        self._load_attempts.inc(model_path, "success" if ok else "fail")
        self._load_latency.inc(model_path, amount=round(seconds * 1e6))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
