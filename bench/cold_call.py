"""The gateway's Predict call to the model server, alone and right after a classify request's
image work, in one process and one run.

At concurrency 1 a classify request decodes and preprocesses its image, then makes the gRPC
call; the direct-gRPC baseline of ``bench/peers.py`` makes the same call back to back. This bench
times the gateway's own client call (``ServingClient.predict``, the same request the gateway
sends) three ways, alternating rounds: back to back, right after decoding and preprocessing the
bench digit (what precedes it in the gateway), and right after reading 16 MB of memory (which
only evicts the CPU caches). A sync gRPC stub back to back is printed beside them. The ratios say
how much of the gateway's extra latency is the call itself running with cold caches, which no
change to the gateway's code removes (docs/gateway.md, "Why the concurrency-1 goals stay unmet").

    python bench/cold_call.py [--calls 2000] [--rounds 3]
"""

# ruff: noqa: E402 - grpc must be imported after tune_grpc()
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

from fdl.grpc_tuning import tune_grpc

tune_grpc()

import grpc
import numpy as np
import uvloop
from gateway_stack import DIGITS, digits_stack
from load_loops import digit_png
from machine import python_speed_ms, speed_line

from api.image_decode import decode_image
from api.preprocess import decode_size, digit_to_mnist
from api.serving_client import PREDICTION_SERVICE, ServingClient, model_spec
from fdl.tensors import from_numpy
from fdl.wire.tfs_pb2 import PredictRequest, PredictResponse

REQUEST_ID = "0123456789abcdef0123456789abcdef"  # the gateway forwards one on every call


async def measure(target: str, args: argparse.Namespace) -> dict[str, list[float]]:
    png, tensor = digit_png()
    batch = tensor.astype(np.uint8)
    work = decode_size("digit", (28, 28))
    sweep = np.ones(2_000_000)  # 16 MB: more than the L2 caches of these VMs
    client = ServingClient(target)
    channel = grpc.insecure_channel(target)
    stub = channel.unary_unary(
        PREDICTION_SERVICE + "Predict",
        request_serializer=PredictRequest.SerializeToString,
        response_deserializer=PredictResponse.FromString,
    )
    request = PredictRequest(model_spec=model_spec(DIGITS, None, None, "serving_default"))
    from_numpy(batch, request.inputs["images"], content=True)

    async def predict() -> None:
        await client.predict(DIGITS, {"images": batch}, request_id=REQUEST_ID)

    async def sync_stub() -> None:
        stub(request, timeout=10)

    def image_work() -> None:
        digit_to_mnist(decode_image(png, work, 10**8))

    def cache_sweep() -> None:
        sweep.sum()

    modes: dict[str, tuple[Callable[[], Awaitable[None]], Callable[[], object] | None]] = {
        "gateway client, back to back": (predict, None),
        "gateway client, after the image work": (predict, image_work),
        "gateway client, after a cache sweep": (predict, cache_sweep),
        "sync stub, back to back": (sync_stub, None),
    }
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    names = list(modes)
    for number in range(args.rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            call, before = modes[name]
            latencies = []
            for index in range(args.calls + 200):  # the first 200 warm up
                if before is not None:
                    before()
                start = time.perf_counter()
                await call()
                if index >= 200:
                    latencies.append((time.perf_counter() - start) * 1000)
            results[name].append(statistics.median(latencies))
        print(f"round {number + 1} of {args.rounds}", flush=True)
    await client.close()
    channel.close()
    return results


def report(results: dict[str, list[float]], rounds: int) -> None:
    medians = {name: statistics.median(values) for name, values in results.items()}
    base = medians["gateway client, back to back"]
    print(f"\nPredict p50 at concurrency 1, medians of {rounds} rounds (ms; ratio to back to back)")
    for name, value in medians.items():
        spread = ", ".join(f"{v:.3f}" for v in results[name])
        print(f"  {name:<40} {value:.3f}  {value / base:.2f}x  (rounds: {spread})")
    cold = medians["gateway client, after the image work"] - base
    print(f"the image work before the call adds {cold:+.3f} ms to the call itself")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    before = python_speed_ms()
    with digits_stack() as stack:
        results = uvloop.run(measure(stack.grpc_target, args))
    report(results, args.rounds)
    print(speed_line(before, python_speed_ms()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
