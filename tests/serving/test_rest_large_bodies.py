"""A large REST body must not stop the server's other calls while its JSON is read.

Every front end shares one event loop (docs/serving.md, "How requests run"); a ``:predict`` body
is read on it only when it is small. With batching, a large body was decoded on the loop too,
so a call of a few MB held every other call (gRPC included) for seconds; and parsing a body of
nested lists spent most of its time in the garbage collector, holding the GIL.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import urllib.request

from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.protocol.rest.jsontext import parse_document

IMAGE = [[[7]] * 8] * 8  # one 8x8x1 image as nested lists


def _batching_server(impl, server_factory, model_stock, tmp_path_factory):
    root = tmp_path_factory.mktemp("large-bodies")
    model_stock.install("a", root / "tiny", 1)
    params = root / "batching.config"
    params.write_text("max_batch_size { value: 1000000 }\nbatch_timeout_micros { value: 0 }\n")
    flags = [
        "--model_name=tiny",
        f"--model_base_path={root / 'tiny'}",
        "--enable_batching=true",
        f"--batching_parameters_file={params}",
        "--enable_grpc_healthcheck_service=true",
    ]
    return server_factory(impl, "large-bodies", flags)


def test_large_batched_body_does_not_hold_other_calls(
    impl, server_factory, model_stock, tmp_path_factory
) -> None:
    """A 13.5 MB body whose values are checked one by one (it holds a literal ``true``, so NumPy's
    fast read cannot vouch for them: seconds of Python) while a gRPC health check runs every
    10 ms: no check may wait for most of the call. Before, the body was decoded on the event
    loop and the checks waited for all of it."""
    server = _batching_server(impl, server_factory, model_stock, tmp_path_factory)
    body = json.dumps({"instances": [IMAGE] * 40_000, "note": True}).encode()
    health = health_pb2_grpc.HealthStub(server.channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    waits: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=120)
            waits.append(time.perf_counter() - start)
            done.wait(0.01)  # the probe's own pace, not a wait for the server

    thread = threading.Thread(target=probe)
    thread.start()
    request = urllib.request.Request(
        f"{server.rest}/v1/models/tiny:predict",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.loads(response.read())
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        thread.join(120)
    assert len(answer["predictions"]) == 40_000
    assert max(waits) < 0.5 * elapsed, (max(waits), elapsed)


def test_parsing_a_large_body_runs_no_garbage_collection() -> None:
    """A body of a million small lists, parsed: the collector, which walks every container
    alive each time it runs, used to run over and over during the parse (3.7 s against 0.6 s
    for 34 MB of images); it is paused, and on again afterwards."""
    body = json.dumps({"instances": [IMAGE] * 20_000}).encode()
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(count)
    try:
        parsed = parse_document(body)
    finally:
        gc.callbacks.remove(count)
    assert len(parsed["instances"]) == 20_000
    assert runs == []
    assert gc.isenabled()
