"""Gateway classify vs direct gRPC Predict to the same model server, in the same run.

Concurrency 1: latency of one 28x28 PNG through the gateway (HTTP multipart, decode, digit
preprocessing, Predict, postprocess) vs one Predict of the already-decoded [1,28,28,1] tensor
straight to the model server. Concurrency 16: requests per second of both.
Goals (issue 5): p50 difference <= 1 ms at concurrency 1; gateway >= 0.7x direct req/s at 16.

    python bench/gateway_latency.py [--requests 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
from gateway_stack import REPO_ROOT, running_stack  # noqa: F401 - sets sys.path
from PIL import Image

from api.serving_client import _PREDICTION, model_spec
from api.tensors import to_tensor_proto
from api.wire.tfs_pb2 import PredictRequest, PredictResponse
from fdl import contract


def digit_png() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(0)
    array = np.zeros((28, 28), np.uint8)
    array[6:22, 12:16] = rng.integers(180, 256, (16, 4))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue(), array[None, :, :, None]


async def sequential(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    for _ in range(20):  # warm-up
        await call()
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


async def throughput(call: Callable[[], Awaitable[None]], workers: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def measure(url: str, target: str, requests: int, seconds: float) -> None:
    png, tensor = digit_png()
    channel = grpc.aio.insecure_channel(target)
    predict = channel.unary_unary(
        _PREDICTION + "Predict",
        request_serializer=PredictRequest.SerializeToString,
        response_deserializer=PredictResponse.FromString,
    )
    http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32))

    async def direct() -> None:
        request = PredictRequest(model_spec=model_spec("digits", signature=contract.SIGNATURE_NAME))
        request.inputs[contract.INPUT_KEY].CopyFrom(to_tensor_proto(tensor))
        await predict(request, timeout=10)

    async def gateway() -> None:
        response = await http.post(
            f"{url}/v1/models/digits:classify", files=[("file", ("d.png", png, "image/png"))]
        )
        response.raise_for_status()

    print(f"concurrency 1, {requests} requests each (ms)")
    rows = {}
    for name, call in (("direct gRPC", direct), ("gateway HTTP", gateway)):
        latencies = await sequential(call, requests)
        rows[name] = latencies
        print(
            f"  {name:13s} p50 {pct(latencies, 50):6.2f}  p90 {pct(latencies, 90):6.2f}  "
            f"p99 {pct(latencies, 99):6.2f}  mean {statistics.fmean(latencies):6.2f}"
        )
    diff = pct(rows["gateway HTTP"], 50) - pct(rows["direct gRPC"], 50)
    print(f"  p50 difference: {diff:.2f} ms (goal <= 1 ms)")
    print(f"concurrency 16, {seconds:.0f} s each (requests/s)")
    rates = {}
    for name, call in (("direct gRPC", direct), ("gateway HTTP", gateway)):
        rates[name] = await throughput(call, 16, seconds)
        print(f"  {name:13s} {rates[name]:8.1f} req/s")
    print(f"  gateway / direct: {rates['gateway HTTP'] / rates['direct gRPC']:.2f}x (goal >= 0.7x)")
    await http.aclose()
    await channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    from serving.testing import build_test_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_test_model(work / "models" / "digits" / "1", (28, 28, 1), 10, model_name="digits")
        with running_stack(work / "models", work, {"digits": 1}) as stack:
            print(f"gateway start-up (spawn to /healthz 200): {stack.gateway_start_s:.2f} s")
            asyncio.run(measure(stack.url, stack.grpc_target, args.requests, args.seconds))
            rss = psutil.Process(stack.gateway.pid).memory_info().rss / 2**20
            print(f"gateway RSS after the run: {rss:.0f} MB (goal <= 150 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
