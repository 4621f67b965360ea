"""Prometheus metrics of the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from api.jobs_snapshot import snapshots_for
from fdl.jobs import JobStatus, JobStore

REQUESTS = Counter(
    "fdl_gateway_requests_total", "HTTP requests", ["route", "method", "model", "status"]
)
REQUEST_LATENCY = Histogram(
    "fdl_gateway_request_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STAGE_LATENCY = Histogram(
    "fdl_gateway_stage_seconds",
    "Latency of each classification stage (decode, preprocess, predict, postprocess)",
    ["stage", "model"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PREDICT_CALL_REQUESTS = Histogram(
    "fdl_gateway_predict_call_requests",
    "Classify requests served by each Predict call to the model server (merged under load)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
PREDICT_SPLITS = Counter(
    "fdl_gateway_predict_splits_total",
    "Merged Predicts the model server refused as invalid (a batch above its max_batch_size), "
    "split and sent again in parts",
    ["model"],
)
CLASSIFICATIONS = Counter("fdl_gateway_images_classified_total", "Images classified", ["model"])
UPSTREAM_ERRORS = Counter(
    "fdl_gateway_upstream_errors_total",
    "Failed calls to the model server (and Redis)",
    ["method", "code"],
)
JOBS_SUBMITTED = Counter("fdl_gateway_jobs_submitted_total", "Training jobs submitted", ["model"])
RATE_LIMITED = Counter("fdl_gateway_rate_limited_total", "Requests refused by the rate limit")
PROMOTIONS = Counter(
    "fdl_gateway_label_changes_total", "Version label promotions", ["model", "label"]
)
BUDGET_IN_USE = Gauge(
    "fdl_gateway_budget_in_use", "Share of a budget in flight (pixels, bytes)", ["budget"]
)
BUDGET_REFUSED = Counter(
    "fdl_gateway_budget_refused_total", "Requests refused (503) by a full budget", ["budget"]
)
HTTP_GUARD = Counter(
    "fdl_gateway_http_guard_total",
    "Connections closed by an HTTP limit (header size, timeouts, connection cap), by listener "
    "(public: FDL_GATEWAY_PORT, probe: FDL_PROBE_PORT)",
    ["reason", "listener"],
)


@lru_cache(maxsize=4096)
def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: the lookup validates and locks on every call, and
    the hot path makes eight of them per request. Label values here are bounded (routes, model
    names the server knows, status codes), and children are never removed."""
    return metric.labels(*labels)


@contextmanager
def timed(stage: str, model: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        child(STAGE_LATENCY, stage, model).observe(time.perf_counter() - start)


class JobsCollector(Collector):
    """``fdl_jobs{state=...}``: jobs by state, from the store's status snapshot at most
    ``cache_s`` old (api/jobs_snapshot.py: one scan at a time, shared with the listings). A
    scrape never waits while there is a snapshot: it takes the latest, however old, and an older
    one than that starts a scan in the background."""

    def __init__(self, store: JobStore, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s

    def _read(self) -> dict[str, int] | None:
        try:
            snapshot = snapshots_for(self.store).get(self.cache_s, stale_ok=True)
        except Exception:  # Redis down, or no snapshot in time: report nothing, not fail
            return None
        counts = {s.value: 0 for s in JobStatus}
        for status, count in snapshot.counts().items():
            counts[str(status)] = counts.get(str(status), 0) + count
        return counts

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # What registering asks for: without it, the registry would collect, and scan, at start.
        yield GaugeMetricFamily("fdl_jobs", "Training jobs by state", labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._read()
        family = GaugeMetricFamily("fdl_jobs", "Training jobs by state", labels=["state"])
        for state, count in sorted((counts or {}).items()):
            family.add_metric([state], count)
        yield family
