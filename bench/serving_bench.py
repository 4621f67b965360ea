"""Predict throughput and latency of fdl-model-server, batching off and on, beside in-process calls.

Builds the book's MNIST CNN (untrained weights; speed does not depend on them), then measures
req/s and p50/p99 latency at concurrency 1, 8 and 32 for: the in-process signature call (the same
Session path the server uses), the server over gRPC with batching off (also with one intra-op and
one inter-op TensorFlow thread), and with batching on (each configuration in ``BATCHING``); plus
a no-op gRPC round trip, the floor of any gRPC call here.
Each server is also loaded at concurrency 32 from another process (``serving_load.py``), as TF
Serving measures batching. Prints the table and the ratios issue 17 sets as goals. Not a test:
numbers vary with the machine.

    .venv/bin/python bench/serving_bench.py [--seconds 3] [--concurrency 1 8 32]
"""

# ruff: noqa: E402 - grpc must be imported after tune_grpc()
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fdl.grpc_tuning import tune_grpc

tune_grpc()  # before grpc loads: the benchmark's clients run as our own processes do

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import python_speed_ms, speed_line
from serving_load import measure

from harness.models import build_test_model, sample_images
from harness.procs import Process, free_port, grpc_ready, wait_for
from serving.servable import Servable

# Batching parameters tried, as TF Serving's batching guide suggests for CPU-only servers: start
# with one batch thread per core and no timeout, then try timeouts of a millisecond or more. On a
# small machine one batch thread (the Session already uses every core) with a short timeout lets
# the next batch fill while one runs.
BATCHING = {
    "2 threads, 0 us": "num_batch_threads { value: 2 }\nbatch_timeout_micros { value: 0 }\n",
    "1 thread, 1000 us": "num_batch_threads { value: 1 }\nbatch_timeout_micros { value: 1000 }\n",
}
FLOOR = "no-op gRPC call (health Check)"
PLAIN = "server, batching off"
# TensorFlow's thread pools sized for the whole machine cost a small model more in hand-offs than
# they gain: the same server with one intra-op and one inter-op thread (TF Serving's flags).
ONE_THREAD = "server, batching off, 1 intra-op + 1 inter-op thread"
ONE_THREAD_FLAGS = ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"]
GAPPED = "in-process, idle gap between"
EXTERNAL = "(load from another process)"
LOAD = 32  # concurrency of the load process
BATCHING_COMMON = "max_batch_size { value: 32 }\nmax_enqueued_batches { value: 1000 }\n"


def start_server(
    model_dir: Path, logs: Path, batching: str | None, extra: list[str]
) -> tuple[Process, int]:
    port = free_port()
    flags = [
        f"--port={port}",
        "--model_name=mnist",
        f"--model_base_path={model_dir}",
        "--enable_grpc_healthcheck_service=true",
        *extra,
    ]
    if batching is not None:
        params = logs / "batching.config"
        params.write_text(BATCHING_COMMON + batching)
        flags += ["--enable_batching=true", f"--batching_parameters_file={params}"]
    name = "bench-batching" if batching else "bench-threads" if extra else "bench-plain"
    process = Process(name, [sys.executable, "-m", "serving", *flags], logs)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    wait_for(
        lambda: grpc_ready(channel),
        120,
        "model server",
        check=process.ensure_alive,
    )
    channel.close()
    return process, port


def external_load(port: int, seconds: float) -> dict[str, float]:
    """Concurrency ``LOAD`` from a process of its own (``serving_load.py``), as TF Serving
    measures batching: the load's threads then do not share this process's GIL."""
    script = Path(__file__).with_name("serving_load.py")
    argv = [sys.executable, str(script), f"--target=127.0.0.1:{port}", f"--concurrency={LOAD}"]
    done = subprocess.run(
        [*argv, f"--seconds={seconds}"], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    speed = [python_speed_ms()]  # the machine's speed before and after: it drifts
    work = Path(tempfile.mkdtemp(prefix="fdl-serving-bench-"))
    model_dir = work / "mnist"
    build_test_model(model_dir / "1", architecture="cnn", model_name="mnist")
    image = sample_images((28, 28, 1), 1, seed=0)

    results: dict[tuple[str, int], dict[str, float]] = {}
    servable = Servable("mnist", 1, model_dir / "1")
    keys = servable.output_keys("", [])
    # As the model server does once its models are loaded: TensorFlow's millions of long-lived
    # objects stay out of the collections that the clients' calls trigger in this process.
    gc.freeze()
    for c in args.concurrency:
        results[("in-process", c)] = measure(
            lambda: servable.run("", {"images": image}, keys), c, args.seconds
        )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    modes: dict[str, tuple[str | None, list[str]]] = {
        PLAIN: (None, []),
        ONE_THREAD: (None, ONE_THREAD_FLAGS),
    }
    modes.update({f"batching on, {name}": (text, []) for name, text in BATCHING.items()})
    for mode, (batching, extra) in modes.items():
        process, port = start_server(model_dir, work, batching, extra)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            if mode == PLAIN and 1 in args.concurrency:
                health = health_pb2_grpc.HealthStub(channel)
                results[(FLOOR, 1)] = measure(
                    lambda h=health: h.Check(health_pb2.HealthCheckRequest()), 1, args.seconds
                )
            for c in args.concurrency:
                results[(mode, c)] = measure(
                    lambda s=stub: s.Predict(request, timeout=60), c, args.seconds
                )
            channel.close()
            results[(f"{mode} {EXTERNAL}", LOAD)] = external_load(port, args.seconds)
        finally:
            process.stop()
    if (FLOOR, 1) in results:
        # The server is never called back to back: between calls the client's round trip leaves
        # the cores idle, and an idle Session runs slower (cold caches and thread pools).
        gap = results[(FLOOR, 1)]["p50"] / 1e3
        results[(GAPPED, 1)] = measure(
            lambda: servable.run("", {"images": image}, keys), 1, args.seconds, idle=gap
        )
    servable.close()
    speed.append(python_speed_ms())
    report(results, args, tf.__version__, speed)


def report(
    results: dict[tuple[str, int], dict[str, float]], args: Any, tf_version: str, speed: list[float]
) -> None:
    print(f"\nMNIST CNN, batch 1 per request, {args.seconds:.0f} s per cell")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf_version}, "
          f"load average {os.getloadavg()[0]:.2f}, "
          f"GRPC_EXPERIMENTS={os.environ.get('GRPC_EXPERIMENTS', '')!r}")  # fmt: skip
    print(speed_line(*speed))
    print(f"{'mode':<60} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (mode, c), r in results.items():
        print(f"{mode:<60} {c:>4} {r['rps']:>9.1f} {r['p50']:>8.2f} {r['p99']:>8.2f}")
    top = max(args.concurrency)
    off = results[(PLAIN, top)]["rps"]
    for name in BATCHING:
        on = results[(f"batching on, {name}", top)]["rps"]
        print(f"batching on ({name}) / off, req/s at concurrency {top}, load from this process: "
              f"{on / off:.2f}x")  # fmt: skip
    off = results[(f"{PLAIN} {EXTERNAL}", LOAD)]
    for name in BATCHING:
        on = results[(f"batching on, {name} {EXTERNAL}", LOAD)]
        rps, p99 = on["rps"] / off["rps"], on["p99"] / off["p99"]
        print(f"batching on ({name}) / off at concurrency {LOAD}, load from another process: "
              f"req/s {rps:.2f}x (goal >= 2x: {_met(rps >= 2)}), p99 {p99:.2f}x "
              f"(goal <= 1.5x: {_met(p99 <= 1.5)})")  # fmt: skip
    if 1 in args.concurrency:
        base = results[("in-process", 1)]["p50"]
        floor = results[(FLOOR, 1)]["p50"]
        for mode in (PLAIN, ONE_THREAD):
            added = results[(mode, 1)]["p50"] - base
            own = results[(mode, 1)]["p50"] - floor - results[(GAPPED, 1)]["p50"]
            met = _met(added <= floor + 0.3)
            print(f"handler overhead ({mode}): server p50 - in-process p50 at concurrency 1 = "
                  f"{added:.2f} ms (goal <= no-op gRPC p50 + 0.3 = {floor + 0.3:.2f}: {met}); "
                  f"beyond an equally idle in-process run and the no-op round trip: "
                  f"{own:.2f} ms")  # fmt: skip


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


if __name__ == "__main__":
    main()
