"""Samples from a Prometheus text exposition (the model server's or the gateway's /metrics),
read with prometheus-client's own parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 30) -> str:
    """The exposition text at ``url``."""
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return response.text


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples named ``name`` (``_total``, ``_count``, ``_bucket`` included, as
    written) whose labels include ``labels``, in the order of the exposition."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of :func:`samples` (0 when there is none)."""
    return float(sum(samples(text, name, **labels)))
