"""Prometheus metrics under TF Serving's names, served at the monitoring config's path.

As TF Serving records them: ``:tensorflow:serving:request_count`` {model_name, status} counts
``Predict`` calls and REST requests, exported without the ``_total`` suffix;
``:tensorflow:serving:request_latency`` {model_name, API, entrypoint} is a histogram in
microseconds of the successful ones (API ``Predict`` over gRPC, ``predict``, ``metadata`` or ``""``
(status) over REST); ``:tensorflow:serving:runtime_latency`` {model_name, API, runtime} times the
Session runs (runtime ``TF1``; a batch is one run). Ours:
``:tensorflow:serving:batching_session:processed_batch_size`` {model_name}.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import Metric

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
_LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))


class _Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], float] = defaultdict(float)

    def inc(self, model: str, status: str) -> None:
        with self._lock:
            self._counts[(model, status)] += 1

    def collect(self) -> Iterator[Metric]:
        metric = Metric(REQUEST_COUNT, "The total number of requests.", "counter")
        with self._lock:
            for (model, status), value in sorted(self._counts.items()):
                metric.add_sample(REQUEST_COUNT, {"model_name": model, "status": status}, value)
        yield metric


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counts = _Counts()
        self.registry.register(self._counts)
        self._latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=_LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self._runtime = Histogram(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=_LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        # ``labels()`` validates and locks on every call: each label set is looked up once.
        self._children: dict[tuple[Histogram, tuple[str, ...]], Histogram] = {}
        self._batch = Histogram(
            BATCH_SIZE,
            "Rows per batch run by server-side batching (after padding).",
            ["model_name"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )

    def record(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        self._counts.inc(model, status)
        if status != "OK":
            return
        self._child(self._latency, model, api, entrypoint).observe(seconds * 1e6)

    def record_run(self, model: str, seconds: float) -> None:
        """One Session run of ``model`` (Predict; a batch counts once)."""
        self._child(self._runtime, model, "Predict", "TF1").observe(seconds * 1e6)

    def _child(self, histogram: Histogram, *labels: str) -> Histogram:
        child = self._children.get((histogram, labels))
        if child is None:
            child = self._children[(histogram, labels)] = histogram.labels(*labels)
        return child

    def record_batch(self, model: str, size: int) -> None:
        self._batch.labels(model).observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
