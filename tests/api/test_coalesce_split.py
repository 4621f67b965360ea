"""Merged Predicts above the model server's ``max_batch_size`` (api.coalesce): refused as a whole,
split and sent again, so every valid request is answered, and the size that works is remembered.

The model server runs with ``--enable_batching`` and ``max_batch_size { value: 4 }``; the gateway
merges up to 64. Coalescer calls are started with ``asyncio.gather`` (the first is sent alone,
the others queue before any answer arrives), so which calls merge is deterministic there; the
HTTP tests send bursts to a real gateway until one of them was split.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from api.coalesce import PredictCoalescer
from api.serving_client import ServingClient
from harness.gateway import Gateway, gateway_running
from harness.mnist import png_bytes
from harness.model_server import ModelServer, model_server_running
from harness.prometheus import scrape, total
from harness.repository import copy_repository

MODEL = "digits"
SERVER_MAX = 4


@pytest.fixture(scope="module")
def batching_server(
    pristine_repository: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """A model server whose batching refuses a Predict of more than SERVER_MAX images."""
    work = tmp_path_factory.mktemp("coalesce-split")
    repo = copy_repository(pristine_repository, work / "models")
    params = work / "batching.config"
    params.write_text(f"max_batch_size {{ value: {SERVER_MAX} }}\n")
    flags = ["--enable_batching=true", f"--batching_parameters_file={params}"]
    with model_server_running(
        "model-server-split", repo, logs_dir, {MODEL: 2}, flags=flags
    ) as server:
        yield server


@pytest.fixture
def fresh_gateway(
    batching_server: ModelServer,
    redis_url: str,
    logs_dir: Path,
    tmp_path: Path,
) -> Callable[[str], AbstractContextManager[Gateway]]:
    """A gateway (defaults: FDL_MAX_BATCH_SIZE 64, FDL_PREDICT_MAX_IN_FLIGHT 1) that has learned
    nothing yet, in front of the batching server."""
    repo = batching_server.config_file.parent

    def start(name: str) -> AbstractContextManager[Gateway]:
        secrets = tmp_path / f"secrets-{name}"
        return gateway_running(name, logs_dir, redis_url, batching_server.port, repo, secrets)

    return start


def _inputs(count: int, rows: int = 1, seed: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (rows, 28, 28, 1), dtype=np.uint8) for _ in range(count)]


def _splits() -> float:
    return REGISTRY.get_sample_value("fdl_gateway_predict_splits_total", {"model": MODEL}) or 0.0


def _calls() -> float:
    count = REGISTRY.get_sample_value("fdl_gateway_predict_call_requests_count", {"model": MODEL})
    return count or 0.0


async def _gather(coalescer: PredictCoalescer, version: int, batches, deadlines=None):
    deadlines = deadlines or [None] * len(batches)
    calls = [
        coalescer.predict(MODEL, version, "images", b, f"r{i}", deadline)
        for i, (b, deadline) in enumerate(zip(batches, deadlines, strict=True))
    ]
    return await asyncio.gather(*calls, return_exceptions=True)


def test_a_refused_merge_is_split_and_its_cap_remembered(batching_server: ModelServer) -> None:
    batches = _inputs(13)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            alone = [
                (await client.predict(MODEL, {"images": b}, version=version))[1] for b in batches
            ]
            coalescer = PredictCoalescer(client, 64, 1)
            before = (_calls(), _splits())
            first = await _gather(coalescer, version, batches)
            middle = (_calls(), _splits())
            second = await _gather(coalescer, version, batches)
            after = (_calls(), _splits())
            return alone, first, second, before, middle, after, dict(coalescer._caps)
        finally:
            await client.close()

    alone, first, second, before, middle, after, caps = asyncio.run(run())
    for results in (first, second):
        for result, reference in zip(results, alone, strict=True):
            assert isinstance(result, tuple), result
            np.testing.assert_allclose(result[1]["scores"], reference["scores"], rtol=1e-5)
    # 1 alone; 12 merged, refused with "Task size 12 is larger than maximum input batch size 4":
    # cap 4 at once, and the 12 again in 3 Predicts of 4.
    assert (middle[0] - before[0], middle[1] - before[1]) == (5, 1)
    assert list(caps.values()) == [SERVER_MAX]
    # Later merges stay under the cap: 1 alone, then 3 Predicts of 4, none refused.
    assert (after[0] - middle[0], after[1] - middle[1]) == (4, 0)


def test_a_caller_too_large_for_the_server_alone_is_refused(batching_server: ModelServer) -> None:
    batches = _inputs(4) + _inputs(1, rows=SERVER_MAX + 1) + _inputs(3)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            return await _gather(PredictCoalescer(client, 64, 1), version, batches)
        finally:
            await client.close()

    results = asyncio.run(run())
    refused = results.pop(4)
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"Task size {SERVER_MAX + 1}" in (refused.details() or "")
    assert all(isinstance(r, tuple) and r[1]["scores"].shape == (1, 10) for r in results)


def test_retries_stay_within_each_callers_deadline(batching_server: ModelServer) -> None:
    batches = _inputs(6)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            now = time.monotonic()
            # Callers 1 and 2 are past their deadline: not sent, merged or again (504).
            deadlines = [now + 30, now, now, now + 30, now + 30, now + 30]
            return await _gather(PredictCoalescer(client, 64, 1), version, batches, deadlines)
        finally:
            await client.close()

    results = asyncio.run(run())
    for index in (1, 2):
        assert isinstance(results[index], grpc.aio.AioRpcError)
        assert results[index].code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert all(isinstance(results[i], tuple) for i in (0, 3, 4, 5))


def _pngs(count: int) -> list[bytes]:
    rng = np.random.default_rng(5)
    return [png_bytes(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(count)]


def _burst(gateway: Gateway, bodies: list[list[bytes]]) -> list[httpx.Response]:
    """POST every body (its images as ``file`` parts) at once, each from its own thread."""
    url = f"{gateway.url}/v1/models/{MODEL}:classify"
    start = threading.Barrier(len(bodies))

    def post(images: list[bytes]) -> httpx.Response:
        files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(images)]
        start.wait()
        return httpx.post(url, files=files, headers=gateway.classifier(), timeout=30)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def _gateway_splits(gateway: Gateway) -> float:
    return total(scrape(f"{gateway.url}/metrics"), "fdl_gateway_predict_splits_total", model=MODEL)


def _bursts_until_split(gateway: Gateway, bodies: list[list[bytes]], check) -> None:
    """Bursts of ``bodies`` (each answer checked) until the gateway split a refused merge."""
    deadline = time.monotonic() + 60
    while _gateway_splits(gateway) == 0:
        assert time.monotonic() < deadline, "no burst was merged beyond the server's limit"
        check(_burst(gateway, bodies))


def test_concurrent_single_images_all_succeed(
    fresh_gateway: Callable[[str], AbstractContextManager[Gateway]],
) -> None:
    pngs = _pngs(48)
    with fresh_gateway("gateway-split") as gateway:
        # One at a time nothing merges: the reference answers.
        reference = [_burst(gateway, [[png]])[0] for png in pngs]
        assert all(r.status_code == 200 for r in reference)
        expected = [r.json()["predictions"] for r in reference]

        def check(responses: list[httpx.Response]) -> None:
            assert [r.status_code for r in responses] == [200] * len(pngs), [
                r.text for r in responses if r.status_code != 200
            ][:3]
            for response, predictions in zip(responses, expected, strict=True):
                (got,), (want,) = response.json()["predictions"], predictions
                assert [t["class_id"] for t in got["top_k"]] == [
                    t["class_id"] for t in want["top_k"]
                ]
                scores = [t["score"] for t in want["top_k"]]
                assert [t["score"] for t in got["top_k"]] == pytest.approx(scores, rel=1e-5)

        _bursts_until_split(gateway, [[png] for png in pngs], check)
        # The cap it learned keeps later merges under the server's limit: no more refusals.
        splits = _gateway_splits(gateway)
        check(_burst(gateway, [[png] for png in pngs]))
        assert _gateway_splits(gateway) == splits


def test_a_request_the_server_refuses_alone_gets_422_and_the_others_200(
    fresh_gateway: Callable[[str], AbstractContextManager[Gateway]],
) -> None:
    pngs = _pngs(40)
    bodies = [[png] for png in pngs]
    bodies.insert(20, pngs[: SERVER_MAX + 1])  # more images than the model server takes

    def check(responses: list[httpx.Response]) -> None:
        refused = responses.pop(20)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_input"
        assert f"Task size {SERVER_MAX + 1}" in refused.json()["error"]["message"]
        assert [r.status_code for r in responses] == [200] * len(pngs)

    # When the large request happens to reach an idle gateway first it is sent alone, refused,
    # and its refusal teaches the gateway the server's limit: later merges then stay under it and
    # nothing is ever split. Such a gateway is left for a fresh one until a merge with the large
    # request was refused and split (what this test is about).
    for attempt in range(8):
        with fresh_gateway(f"gateway-split-refused-{attempt}") as gateway:
            for _burst_number in range(3):
                check(_burst(gateway, bodies))
                if _gateway_splits(gateway) > 0:
                    return
    pytest.fail("no burst merged the large request with others in 8 fresh gateways")
