"""Load for the model server from a process of its own, as TF Serving measures batching.

``measure`` times a call from N client threads; run as a script, it sends single-image MNIST
``Predict`` calls to a model server and prints one JSON line ``{"rps", "p50", "p99"}`` (ms), so
the benchmark's own process (which holds TensorFlow and the other clients) does not compete with
the load's threads for the GIL.

    python bench/serving_load.py --target 127.0.0.1:8500 --concurrency 32 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fdl.grpc_tuning import tune_grpc

tune_grpc()


def measure(
    call: Callable[[], object], concurrency: int, seconds: float, idle: float = 0.0
) -> dict[str, float]:
    """req/s and latency of ``call`` from ``concurrency`` threads; ``idle`` seconds of busy
    waiting (like a client's round trip on the other core) before each timed call."""
    latencies: list[float] = []
    lock = threading.Lock()
    for _ in range(3):
        call()  # warm the path
    stop = time.monotonic() + seconds

    def worker() -> None:
        mine = []
        while time.monotonic() < stop:
            start = time.perf_counter()
            while idle and time.perf_counter() - start < idle:
                pass
            start = time.perf_counter()
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    begin = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1e3,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    import grpc
    import numpy as np

    from fdl.tensors import to_tensor_proto
    from fdl.wire.tfs_pb2 import PredictRequest, PredictResponse

    channel = grpc.insecure_channel(args.target)
    predict = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=PredictRequest.SerializeToString,
        response_deserializer=PredictResponse.FromString,
    )
    image = np.random.default_rng(0).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    request = PredictRequest()
    request.model_spec.name = args.model
    request.inputs["images"].CopyFrom(to_tensor_proto(image))
    result = measure(lambda: predict(request, timeout=60), args.concurrency, args.seconds)
    channel.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
