"""A large classify body whose merged Predict the model server refuses for its size (split and
sent again, api.coalesce_split), or whose deadline passes while it waits for a lane, is freed
when its answer is sent, by reference counting alone.

tests/api/test_refused_bodies_freed.py's method (the real app in-process, each body in fresh
pieces, the collector off, the memory Python holds traced), in front of a model server whose
batching refuses a Predict of more than SERVER_MAX rows (tests/api/test_coalesce_split.py's).
Which requests merge is made certain: the lane sends nothing until all of a round's requests
wait in it (the body budget, 32 MiB, holds them all), then one Predict takes them."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import REGISTRY

from api.coalesce import PredictCoalescer
from api.main import create_app
from harness.gateway import inprocess_settings
from harness.model_server import ModelServer
from tests.api.test_coalesce_split import SERVER_MAX, batching_server  # noqa: F401
from tests.api.test_refused_bodies_freed import PNG, REQUESTS, Case, measured, post

JSON = "application/json"


def noise(side: int, seed: int) -> bytes:
    """A PNG of side x side RGB noise, stored uncompressed (3 side^2 bytes and a little)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def images_json(count: int = SERVER_MAX + 1, side: int = 680) -> bytes:
    """More images than the server takes in one Predict, as JSON b64 (9.3 MB)."""
    instances = (
        b'{"b64": "' + base64.b64encode(noise(side, seed)) + b'"}' for seed in range(count)
    )
    return b'{"instances": [' + b", ".join(instances) + b"]}"


def splits() -> float:
    return REGISTRY.get_sample_value("fdl_gateway_predict_splits_total", {"model": "digits"}) or 0.0


def predict_timeout(client: TestClient) -> Callable[[], None]:
    """Each request's predict deadline passes at once (metadata calls keep theirs)."""
    serving: Any = client.app.state.serving  # type: ignore[attr-defined]
    timeout_s, serving.timeout_s = serving.timeout_s, 1e-6

    def undo() -> None:
        serving.timeout_s = timeout_s

    return undo


# Each case: the requests of a round, and whether the gateway forgets the cap it learned before
# each round (so that round's merged Predict is refused and split).
CASES: dict[str, tuple[Case, bool]] = {
    # 3 merged (15 rows), refused (Task size 15): the cap (4) learned, the 3 sent again one a
    # Predict, each refused for its own size (Task size 5): 422 each.
    "too-large-split": (Case(images_json, JSON, (422, "invalid_input"), at_once=range(3)), True),
    # The cap known: each goes alone, refused (Task size 5): 422.
    "too-large-within-cap": (
        Case(images_json, JSON, (422, "invalid_input"), at_once=range(3)),
        False,
    ),
    # 5 merged, refused (Task size 5), sent again as 4 and 1, both served.
    "split-served": (
        Case(partial(noise, 1400, 1), PNG, (200, ""), at_once=range(SERVER_MAX + 1)),
        True,
    ),
    # 3 past their predict deadline while they wait: the coalescer's DEADLINE_EXCEEDED (504).
    "deadline-passed-waiting": (
        Case(
            partial(noise, 1780, 1),
            PNG,
            (504, "model_server_timeout"),
            at_once=range(3),
            setup=predict_timeout,
        ),
        False,
    ),
}


# How long the requests may take to be decoded and wait in the lane: 3 of 9.3 MB took over 2 s on
# a machine loaded 7 times over.
ARRIVE_S = 30.0


@pytest.fixture(scope="module")
def split_client(
    redis_url: str,
    batching_server: ModelServer,  # noqa: F811
) -> Iterator[TestClient]:
    settings = inprocess_settings(redis_url, batching_server, database=11)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


async def merged(app: Any, case: Case, body: bytes) -> frozenset[tuple[int, str]]:
    """The answers to ``case``'s requests, sent once all of them wait in the lane."""
    predictor: PredictCoalescer = app.state.predictor
    predictor.max_in_flight = 0  # no lane sends: every request waits
    try:
        posts = [asyncio.ensure_future(post(app, case, body)) for _ in case.at_once]
        deadline = time.monotonic() + ARRIVE_S
        while sum(len(lane.waiting) for lane in predictor._lanes.values()) < len(posts):
            assert time.monotonic() < deadline, "the requests did not all wait"
            await asyncio.sleep(0.005)
    finally:
        predictor.max_in_flight = 1
    for key, lane in list(predictor._lanes.items()):
        predictor._dispatch(key, lane)
    return frozenset(await asyncio.gather(*posts))


@pytest.mark.parametrize(("case", "forget"), CASES.values(), ids=CASES.keys())
def test_split_or_late_bodies_are_freed_without_the_collector(
    split_client: TestClient, case: Case, forget: bool
) -> None:
    client = split_client
    app: Any = client.app
    body = case.body()
    size = len(body)

    async def together() -> frozenset[tuple[int, str]]:
        if forget:
            app.state.predictor._caps.clear()
        return await merged(app, case, body)

    def send() -> frozenset[tuple[int, str]]:
        return client.portal.call(together)

    before = splits()
    answers, left = measured(client, case, send, size)
    assert answers == {frozenset({case.expected})}
    # Every round's merged Predict was refused and split; or (the cap known, or none sent) none.
    assert splits() - before == (1 + REQUESTS if forget else 0)
    assert left < size // 2, (
        f"{REQUESTS} x {len(case.at_once)} bodies of {size:,} bytes left {left:,} bytes behind "
        "until a collection"
    )
