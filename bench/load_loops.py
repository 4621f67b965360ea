"""The load loops of the latency benches (bench/gateway_latency.py, bench/peers.py): one call at a
time for latencies, many at once for throughput, the CPU time each process spends, and the
28x28 digit PNG both send."""

from __future__ import annotations

import asyncio
import io
import resource
import time

import numpy as np
import psutil
from gateway_calls import Call
from PIL import Image


def digit_png() -> tuple[bytes, np.ndarray]:
    """A 28x28 PNG of a bar, and its pixels as the [1, 28, 28, 1] tensor a direct Predict sends."""
    rng = np.random.default_rng(0)
    array = np.zeros((28, 28), np.uint8)
    array[6:22, 12:16] = rng.integers(180, 256, (16, 4))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue(), array[None, :, :, None]


async def sequential(call: Call, count: int) -> list[float]:
    """Milliseconds of each of ``count`` calls made one after another (after 20 warm-up calls)."""
    for _ in range(20):  # warm-up
        await call()
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def throughput(call: Call, workers: int, seconds: float) -> tuple[float, int]:
    """Calls per second of ``workers`` callers for ``seconds``, and how many they made."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.perf_counter() - start), done


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def tree_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the process and its children (an ASGI server may serve from a worker)."""
    return cpu_s(process) + sum(cpu_s(child) for child in process.children(recursive=True))
