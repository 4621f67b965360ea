"""Image headers are read in a worker thread, never on the event loop, except for the single tiny
image processed inline; the pixel limits still answer in the same order with the same messages.

In-process app over a real model server and Redis. Pillow's ``Image.open`` is watched (and still
called): each call notes whether an event loop runs in its thread, which is deterministic where a
measured loop stall would not be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from harness.gateway import BLANK_PNG, CLASSIFY_KEY, bearer, inprocess_settings
from harness.mnist import png_bytes
from harness.model_server import ModelServer

CLASSIFY = "/v1/models/digits:classify"
# More than 16 KB (random pixels barely compress): not the inline fast path even alone.
NOISE_PNG = png_bytes(np.random.default_rng(7).integers(0, 256, (130, 130), dtype=np.uint8))


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-path"])
def client(
    request: pytest.FixtureRequest, redis_url: str, route_model_server: ModelServer
) -> Iterator[TestClient]:
    settings = inprocess_settings(
        redis_url,
        route_model_server,
        database=8,
        classify_fast_path=request.param,
        max_batch_pixels=18_000,  # the noise image and one digit
        decode_free_pixels=1_000,  # the noise image takes a share of the budget, digits not
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def opened_on_loop(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each Image.open, whether it ran in the event loop's thread."""
    calls: list[bool] = []
    real_open = Image.open

    def watched(*args: Any, **kwargs: Any) -> Image.Image:
        try:
            asyncio.get_running_loop()
            calls.append(True)
        except RuntimeError:
            calls.append(False)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", watched)
    return calls


def classify(client: TestClient, images: list[bytes]) -> httpx.Response:
    files = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return client.post(CLASSIFY, files=files, headers=bearer(CLASSIFY_KEY))


@pytest.mark.parametrize(
    "images", [[BLANK_PNG] * 3, [NOISE_PNG], [BLANK_PNG, NOISE_PNG]], ids=["3-tiny", "1-big", "2"]
)
def test_headers_are_read_off_the_loop(
    client: TestClient, opened_on_loop: list[bool], images: list[bytes]
) -> None:
    response = classify(client, images)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(images)
    assert len(opened_on_loop) >= len(images)
    assert not any(opened_on_loop), opened_on_loop


def test_one_tiny_image_stays_on_the_loop(client: TestClient, opened_on_loop: list[bool]) -> None:
    assert classify(client, [BLANK_PNG]).status_code == 200
    assert opened_on_loop == [True]  # no hop to a worker thread for it


def test_limits_answer_in_the_same_order(client: TestClient, opened_on_loop: list[bool]) -> None:
    too_many = classify(client, [NOISE_PNG, BLANK_PNG, BLANK_PNG])
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["error"] == {
        "code": "batch_too_large",
        "message": "the images have 18,468 pixels together; the limit is 18,000",
    }
    # A bad image is found before the total is added up, and named by its place.
    bad = classify(client, [NOISE_PNG, b"not an image", BLANK_PNG, BLANK_PNG])
    assert bad.status_code == 415, bad.text
    error = bad.json()["error"]
    assert error["code"] == "unsupported_image"
    assert error["message"].startswith("image 1: the file is not an image")
    empty = classify(client, [NOISE_PNG, BLANK_PNG, BLANK_PNG, b""])
    assert empty.status_code == 422, empty.text
    assert empty.json()["error"]["code"] == "empty_image"
    assert not any(opened_on_loop)
