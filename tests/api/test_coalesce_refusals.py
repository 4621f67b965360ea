"""What refused merged Predicts cost (api.coalesce_split), callers' own deadlines, and the order
of a lane's next Predict and the previous callers' resumption (api.coalesce).

Against a real model server with ``--enable_batching`` and ``max_batch_size { value: 4 }``. The
coalescer is given a recording client: the real ServingClient, noting when each Predict starts and
returns (and holding one back until told, where a test needs a Predict to outlast a deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from api.coalesce import PredictCoalescer
from api.serving_client import ServingClient
from harness.model_server import ModelServer, model_server_running
from harness.repository import copy_repository
from tests.api.test_coalesce_split import MODEL, SERVER_MAX, _calls, _gather, _inputs, _splits


@pytest.fixture(scope="module")
def batching_server(
    pristine_repository: Path, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    work = tmp_path_factory.mktemp("coalesce-refusals")
    repo = copy_repository(pristine_repository, work / "models")
    params = work / "batching.config"
    params.write_text(f"max_batch_size {{ value: {SERVER_MAX} }}\n")
    flags = ["--enable_batching=true", f"--batching_parameters_file={params}"]
    with model_server_running(
        "model-server-refusals", repo, logs_dir, {MODEL: 2}, flags=flags
    ) as server:
        yield server


class _Recording:
    """The real client; ``events`` records each Predict's "send" and "returned". The Predict
    numbered ``held`` (from 0) waits for ``release`` before it goes to the server."""

    def __init__(self, client: ServingClient, held: int | None = None) -> None:
        self.client = client
        self.timeout_s = client.timeout_s
        self.events: list[str] = []
        self.held = held
        self.release = asyncio.Event()
        self.count = 0

    async def predict(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, np.ndarray]]:
        index, self.count = self.count, self.count + 1
        self.events.append("send")
        if index == self.held:
            await asyncio.wait_for(self.release.wait(), 10)
        try:
            return await self.client.predict(*args, **kwargs)
        finally:
            self.events.append("returned")


def test_a_refusal_of_every_part_stops_the_split(batching_server: ModelServer) -> None:
    """float32 to a uint8 input: every Predict is refused, whatever its size. 64 queued callers
    cost the merged Predict and its two halves, not a split down to each caller (128)."""
    batches = [b.astype(np.float32) for b in _inputs(65)]

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(client, 64, 1)
            bursts = []
            for _ in range(2):
                before = (_calls(), _splits())
                results = await _gather(coalescer, version, batches)
                bursts.append((results, (_calls() - before[0], _splits() - before[1])))
            return bursts, dict(coalescer._caps)
        finally:
            await client.close()

    bursts, caps = asyncio.run(run())
    for results, cost in bursts:
        assert all(
            isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.INVALID_ARGUMENT
            for r in results
        ), results
        assert cost == (4, 1)  # 1 alone, 1 merged, 2 halves
    assert caps == {}  # nothing about size was learned


def test_oversized_callers_teach_the_servers_limit(batching_server: ModelServer) -> None:
    """33 callers of 5 rows each (the server takes 4): the server's "Task size 60 is larger than
    maximum input batch size 4" is the cap at once, and each caller is then refused alone."""
    batches = _inputs(33, rows=SERVER_MAX + 1)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(client, 64, 1)
            bursts = []
            for _ in range(2):
                before = (_calls(), _splits())
                results = await _gather(coalescer, version, batches)
                bursts.append((results, (_calls() - before[0], _splits() - before[1])))
            return bursts, list(coalescer._caps.values())
        finally:
            await client.close()

    bursts, caps = asyncio.run(run())
    for results, _ in bursts:
        for result in results:
            assert isinstance(result, grpc.aio.AioRpcError), result
            assert f"Task size {SERVER_MAX + 1} " in (result.details() or "")
    assert caps == [SERVER_MAX]
    # 1 alone, 12 merged (60 rows) and refused, those 12 alone, then the other 20 alone.
    assert bursts[0][1] == (34, 1)
    assert bursts[1][1] == (33, 0)  # each alone: what merging off costs


def test_a_callers_deadline_fails_only_that_caller(batching_server: ModelServer) -> None:
    """Callers 1-5 merge, are refused (5 rows), and go again as [1, 2, 3, 4] and [5]. Caller 2's
    deadline passes while [1, 2, 3, 4] is held back: it alone gets DEADLINE_EXCEEDED."""
    batches = _inputs(6)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        recording = _Recording(client, held=2)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(recording, 64, 1)  # type: ignore[arg-type]
            now = time.monotonic()
            deadlines = [now + 30, now + 30, now + 0.5, now + 30, now + 30, now + 30]
            tasks = [
                asyncio.ensure_future(
                    coalescer.predict(MODEL, version, "images", batch, f"r{i}", deadline)
                )
                for i, (batch, deadline) in enumerate(zip(batches, deadlines, strict=True))
            ]
            tasks[2].add_done_callback(lambda _: recording.release.set())
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    assert isinstance(results[2], grpc.aio.AioRpcError)
    assert results[2].code() == grpc.StatusCode.DEADLINE_EXCEEDED
    others = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, tuple) and r[1]["scores"].shape == (1, 10) for r in others), others


def test_callers_past_their_deadline_are_not_sent(batching_server: ModelServer) -> None:
    batches = _inputs(4)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        try:
            version = (await client.input_spec(MODEL)).version
            now = time.monotonic()
            before = _calls()
            results = await _gather(
                PredictCoalescer(client, 64, 1), version, batches, [now + 30, now, now + 30, None]
            )
            return results, _calls() - before
        finally:
            await client.close()

    results, calls = asyncio.run(run())
    assert isinstance(results[1], grpc.aio.AioRpcError), results[1]
    assert results[1].code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert all(isinstance(results[i], tuple) for i in (0, 2, 3))
    assert calls == 2  # caller 0 alone, then 2 and 3 together


def test_the_next_predict_goes_out_before_the_callers_resume(
    batching_server: ModelServer,
) -> None:
    """With one Predict in flight, the next merged Predict is sent as soon as one returns; the
    callers it answered resume after, so the model server does not wait on their
    postprocessing."""
    x = np.zeros((1, 28, 28, 1), np.uint8)

    async def run():
        client = ServingClient(batching_server.target, timeout_s=30)
        recording = _Recording(client)
        try:
            version = (await client.input_spec(MODEL)).version
            coalescer = PredictCoalescer(recording, SERVER_MAX, 1)  # type: ignore[arg-type]

            async def caller(i: int) -> None:
                await coalescer.predict(MODEL, version, "images", x, f"r{i}")
                recording.events.append("caller")

            await asyncio.gather(*(caller(i) for i in range(25)))
            return recording.events
        finally:
            await client.close()

    events = asyncio.run(run())
    returns = [i for i, event in enumerate(events) if event == "returned"]
    assert len(returns) == 7  # 1 alone, then 6 merged Predicts of 4
    # The first returns to its own caller; every later one but the last is followed by a send.
    for index in returns[1:-1]:
        assert events[index + 1] == "send", "".join(e[0] for e in events)
