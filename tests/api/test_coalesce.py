"""Concurrent Predicts merged into one call (api.coalesce) against the real model server.

The calls are started together with ``asyncio.gather``: the first finds the lane free and is sent
alone; the others are queued before any gRPC answer can arrive, so which calls merge is
deterministic. Calls are counted with the gateway's ``fdl_gateway_predict_call_requests``
histogram and, independently, with the model server's own Predict counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.coalesce import PredictCoalescer, joined_ids
from api.serving_client import ServingClient
from harness.model_server import ModelServer, model_server_running, ok_requests
from harness.repository import copy_repository

MODEL = "digits"


def _inputs(count: int, rows: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (rows, 28, 28, 1), dtype=np.uint8) for _ in range(count)]


def _calls() -> tuple[float, float]:
    """(Predict calls, requests they served) so far for MODEL, from the gateway's histogram."""
    count = REGISTRY.get_sample_value("fdl_gateway_predict_call_requests_count", {"model": MODEL})
    total = REGISTRY.get_sample_value("fdl_gateway_predict_call_requests_sum", {"model": MODEL})
    return count or 0.0, total or 0.0


@pytest.fixture(scope="module")
def counting_server(
    pristine_repository: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """Its own server, with Prometheus metrics: it counts the Predicts it answers."""
    work = tmp_path_factory.mktemp("coalesce")
    repo = copy_repository(pristine_repository, work / "models")
    monitoring = work / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    flags = [f"--monitoring_config_file={monitoring}"]
    with model_server_running(
        "model-server-coalesce", repo, logs_dir, {MODEL: 2}, flags=flags
    ) as server:
        yield server


async def _run(server: ModelServer, batches, max_batch: int = 64, max_in_flight: int = 1):
    client = ServingClient(server.target, timeout_s=30)
    try:
        version = (await client.input_spec(MODEL)).version
        alone = [(await client.predict(MODEL, {"images": b}, version=version))[1] for b in batches]
        coalescer = PredictCoalescer(client, max_batch, max_in_flight)
        before = _calls()
        calls = [
            coalescer.predict(MODEL, version, "images", b, f"r{i}") for i, b in enumerate(batches)
        ]
        merged = await asyncio.gather(*calls)
        after = _calls()
        return alone, merged, (after[0] - before[0], after[1] - before[1]), version
    finally:
        await client.close()


def test_concurrent_calls_share_a_predict_and_each_gets_its_own_rows(
    counting_server: ModelServer,
) -> None:
    batches = _inputs(12) + _inputs(3, rows=2)  # single images and multi-image requests
    server_before = ok_requests(counting_server)
    alone, merged, (calls, served), version = asyncio.run(_run(counting_server, batches))
    # One call sent at once, then the 14 that queued behind it in one more.
    assert (calls, served) == (2, 15)
    # Of the model server's Predicts, 15 answered the one-by-one reference calls.
    assert ok_requests(counting_server) - server_before == 15 + 2
    for (served_version, outputs), reference, batch in zip(merged, alone, batches, strict=True):
        assert served_version == version
        assert outputs["scores"].shape == (len(batch), 10)
        np.testing.assert_allclose(outputs["scores"], reference["scores"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(outputs["classes"], reference["classes"])


def test_merged_calls_respect_the_batch_limit(counting_server: ModelServer) -> None:
    batches = _inputs(10)
    _alone, merged, (calls, served), _version = asyncio.run(
        _run(counting_server, batches, max_batch=4)
    )
    # 1 alone, then the 9 waiting in calls of at most 4 rows: 4, 4, 1.
    assert (calls, served) == (4, 10)
    assert all(outputs["scores"].shape == (1, 10) for _version, outputs in merged)


def test_no_limit_sends_every_call_alone(counting_server: ModelServer) -> None:
    _alone, _merged, (calls, served), _version = asyncio.run(
        _run(counting_server, _inputs(6), max_in_flight=0)
    )
    assert (calls, served) == (6, 6)


def test_a_failed_predict_fails_every_request_in_it(counting_server: ModelServer) -> None:
    async def run() -> list[object]:
        client = ServingClient(counting_server.target, timeout_s=30)
        try:
            coalescer = PredictCoalescer(client, 64, 1)
            calls = [coalescer.predict(MODEL, 99, "images", b, "r") for b in _inputs(4)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    assert len(results) == 4
    for result in results:
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.NOT_FOUND


def test_a_caller_that_gives_up_while_waiting_is_skipped(counting_server: ModelServer) -> None:
    async def run() -> tuple[list[object], tuple[float, float]]:
        client = ServingClient(counting_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(client, 64, 1)
            tasks = [
                asyncio.ensure_future(coalescer.predict(MODEL, version, "images", b, f"r{i}"))
                for i, b in enumerate(_inputs(5))
            ]
            await asyncio.sleep(0)  # every task has reached the coalescer: 1 sent, 4 waiting
            tasks[2].cancel()
            before = _calls()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            after = _calls()
            return results, (after[0] - before[0], after[1] - before[1])
        finally:
            await client.close()

    results, (_calls_made, served) = asyncio.run(run())
    assert isinstance(results[2], asyncio.CancelledError)
    assert all(isinstance(r, tuple) for i, r in enumerate(results) if i != 2)
    assert served == 3  # the 3 still waiting went out together; the cancelled one did not


@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_lanes_are_forgotten_when_idle(counting_server: ModelServer, max_in_flight: int) -> None:
    async def run() -> int:
        client = ServingClient(counting_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(client, 64, max_in_flight)
            await asyncio.gather(
                *(coalescer.predict(MODEL, version, "images", b, "r") for b in _inputs(8))
            )
            return len(coalescer._lanes)
        finally:
            await client.close()

    assert asyncio.run(run()) == 0


def test_forwarded_request_ids_are_joined_and_bounded() -> None:
    assert joined_ids(["a"]) == "a"
    assert joined_ids(["a", "b", "c"]) == "a,b,c"
    long_ids = [f"{i:0128d}" for i in range(64)]  # the longest ids the gateway accepts
    value = joined_ids(long_ids)
    assert len(value) <= 1024 + len(",+64")
    assert value.startswith(long_ids[0] + "," + long_ids[1])
    kept = value.split(",")[:-1]
    assert kept == long_ids[: len(kept)] and value.endswith(f",+{64 - len(kept)}")
