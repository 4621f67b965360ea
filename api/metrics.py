"""Prometheus metrics of the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

REQUESTS = Counter("fdl_gateway_requests_total", "HTTP requests", ["route", "method", "status"])
REQUEST_LATENCY = Histogram(
    "fdl_gateway_request_seconds", "HTTP request latency", ["route", "method"]
)
STAGE_LATENCY = Histogram(
    "fdl_gateway_stage_seconds",
    "Latency of each classification stage",
    ["stage", "model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CLASSIFICATIONS = Counter("fdl_gateway_images_classified_total", "Images classified", ["model"])
UPSTREAM_ERRORS = Counter(
    "fdl_gateway_upstream_errors_total", "Failed calls to the model server", ["method", "code"]
)
JOBS_SUBMITTED = Counter("fdl_gateway_jobs_submitted_total", "Training jobs submitted", ["model"])


@contextmanager
def timed(stage: str, model: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_LATENCY.labels(stage, model).observe(time.perf_counter() - start)
