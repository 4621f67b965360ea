"""Samples from a Prometheus text exposition (the model server's or the gateway's /metrics)."""

from __future__ import annotations

import httpx


def sample_sums(url: str, *prefixes: str) -> list[float]:
    """For each prefix, the sum of the sample lines at ``url`` that start with it (0 if none)."""
    sums = [0.0] * len(prefixes)
    for line in httpx.get(url, timeout=10).text.splitlines():
        for index, prefix in enumerate(prefixes):
            if line.startswith(prefix):
                sums[index] += float(line.rsplit(" ", 1)[1])
    return sums
