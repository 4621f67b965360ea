"""A large classify body that ends without success is freed when its answer is sent, by
reference counting alone.

An error raised through a frame that also holds it (a Future, the error as an argument or a
local) is a reference cycle through the request's own frames, which kept each body (up to
FDL_MAX_BODY_BYTES, 10 MB; twice that for a multipart body, read and parsed) until a full
collection: images refused in the decoding worker thread (422 corrupt_image, 415), the
middleware's 413 and 503 sent while the body streams, a model or label the model server does not
serve (404), and a merged Predict that fails.

The real app in-process (a real model server and Redis behind it), each body handed to it in
fresh pieces as a server would, the collector off while the requests run, the memory Python holds
traced: what the requests leave behind is a fraction of one body, not one body per request."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import io
import json
import math
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.budget import Budget
from api.main import create_app
from api.middleware import CLIENT_CLOSED
from harness.gateway import CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

MODELS = "/v1/models"
CLASSIFY = f"{MODELS}/digits:classify"
SIZE = 9_500_000  # under FDL_MAX_BODY_BYTES (10 MiB)
OVER = 10_600_000  # over it
REQUESTS = 8
SETTLE_S = 2.0
PIECE = 1024 * 1024  # the body arrives in pieces of this many bytes
BOUNDARY = "refused-body-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
PNG = "image/png"
SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST"}
SCOPE |= {"scheme": "http", "root_path": "", "client": ("127.0.0.1", 1), "server": ("x", 80)}
GHOST = 99  # a version of digits the model server does not serve
GHOST_PATH = f"{MODELS}/digits/versions/{GHOST}:classify"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def garbage_png(side: int = 1000, size: int = SIZE) -> bytes:
    """A valid PNG header (side x side grey) and an IDAT of random bytes: opened, then 422."""
    header = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    )
    noise = np.random.default_rng(0).bytes(size - len(header) - 12 - 12)
    return header + chunk(b"IDAT", noise) + chunk(b"IEND", b"")


def noise_png() -> bytes:
    """A PNG that decodes: 1780x1780 RGB noise, stored uncompressed (9.5 MB)."""
    pixels = np.random.default_rng(1).integers(0, 256, (1780, 1780, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def multipart(data: bytes, disposition: str = 'name="file"; filename="a.png"') -> bytes:
    head = (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n"
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def two_parts() -> bytes:
    """A file part, then a part with no name: Starlette's parser refuses it (400, our 422)."""
    second = multipart(b"", 'filename="b.png"')[len(BOUNDARY) + 2 :]
    return multipart(garbage_png())[:-4] + second


def b64_json(text: bytes) -> bytes:
    return b'{"instances": [{"b64": "' + text + b'"}]}'


def hold(which: str) -> Callable[[TestClient], Callable[[], None]]:
    """Takes the whole of a budget ("body" or "decode"), which then gives up at once (503)."""

    def take(client: TestClient) -> Callable[[], None]:
        app: Any = client.app
        budget: Budget = (
            app.state.decode_limits.budget
            if which == "decode"
            else next(m.kwargs["body_budget"] for m in app.user_middleware if m.kwargs)
        )
        taken, wait_s = client.portal.call(budget.take, budget.capacity), budget.wait_s
        budget.wait_s = 0.01

        def undo() -> None:
            budget.wait_s = wait_s
            client.portal.call(budget.give, taken)

        return undo

    return take


def ghost_version(client: TestClient) -> Callable[[], None]:
    """The metadata cache names digits version GHOST as version 2 is: the request decodes its
    image, and the model server refuses the Predict (NOT_FOUND: 404)."""
    cache: Any = client.app.state.metadata  # type: ignore[attr-defined]
    spec = client.portal.call(cache.get, "digits", 2)
    key = ("digits", GHOST, None)
    cache._entries[key] = (math.inf, dataclasses.replace(spec, version=GHOST))
    return lambda: cache._entries.pop(key, None)


@dataclass(frozen=True)
class Case:
    body: Callable[[], bytes]
    content_type: str
    expected: tuple[int, str]
    path: str = CLASSIFY
    key: str = CLASSIFY_KEY
    chunked: bool = False  # sent with no Content-Length: the middleware counts it as it comes
    leave_after: int | None = None  # the client leaves after this many pieces of the body
    at_once: range = range(1)  # requests sent together (a Predict merges those that wait)
    # What the app is made to do before the requests; it returns what undoes it.
    setup: Callable[[TestClient], Callable[[], None]] | None = None


CASES = {
    "raw-png": Case(garbage_png, PNG, (422, "corrupt_image")),
    "multipart-png": Case(lambda: multipart(garbage_png()), MULTIPART, (422, "corrupt_image")),
    "raw-not-a-jpeg": Case(
        lambda: b"\xff\xd8\xff\xe0" + garbage_png()[4:], "image/jpeg", (415, "unsupported_image")
    ),
    "raw-too-many-pixels": Case(lambda: garbage_png(side=5000), PNG, (413, "image_too_large")),
    "raw-over-limit": Case(lambda: garbage_png(size=OVER), PNG, (413, "body_too_large")),
    "raw-over-limit-chunked": Case(
        lambda: garbage_png(size=OVER), PNG, (413, "body_too_large"), chunked=True
    ),
    "multipart-over-limit-chunked": Case(
        lambda: multipart(garbage_png(size=OVER)), MULTIPART, (413, "body_too_large"), chunked=True
    ),
    "body-budget-full": Case(garbage_png, PNG, (503, "busy"), chunked=True, setup=hold("body")),
    "decode-budget-full": Case(garbage_png, PNG, (503, "busy"), setup=hold("decode")),
    "multipart-no-filename": Case(
        lambda: multipart(garbage_png(), 'name="file"'), MULTIPART, (422, "invalid_multipart")
    ),
    "multipart-no-name": Case(two_parts, MULTIPART, (422, "invalid_multipart")),
    "json-bad-base64": Case(
        lambda: b64_json(b"A" * SIZE + b"!"), "application/json", (422, "invalid_base64")
    ),
    "json-too-complex": Case(
        lambda: b64_json(b"," * SIZE), "application/json", (400, "json_too_complex")
    ),
    "unsupported-type": Case(garbage_png, "text/plain", (415, "unsupported_media_type")),
    "bad-key": Case(garbage_png, PNG, (401, "unauthorized"), key="not-a-key-0123456789"),
    "client-leaves-mid-body": Case(garbage_png, PNG, (CLIENT_CLOSED, ""), leave_after=5),
    "model-not-served": Case(
        garbage_png, PNG, (404, "model_not_found"), path=f"{MODELS}/absent:classify"
    ),
    "label-not-found": Case(
        garbage_png, PNG, (404, "label_not_found"), path=f"{MODELS}/digits/labels/x:classify"
    ),
    "predict-refused": Case(
        noise_png, PNG, (404, "model_not_found"), path=GHOST_PATH, setup=ghost_version
    ),
    "predict-refused-merged": Case(
        noise_png,
        PNG,
        (404, "model_not_found"),
        path=GHOST_PATH,
        setup=ghost_version,
        at_once=range(4),  # one Predict alone, then the three that waited, merged
    ),
}


@pytest.fixture(scope="module")
def client(redis_url: str, route_model_server: ModelServer) -> Iterator[TestClient]:
    settings = inprocess_settings(redis_url, route_model_server, database=7)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


async def post(app: Any, case: Case, body: bytes) -> tuple[int, str]:
    """``body`` straight to the app in fresh PIECE-byte pieces, as a server hands it over (the
    test client's transport keeps each body it sends in a cycle of its own)."""
    view = memoryview(body)
    leave_after = case.leave_after
    starts = list(range(0, len(body), PIECE))[:leave_after]
    length = ("transfer-encoding", "chunked") if case.chunked else ("content-length", len(body))
    headers: list[tuple[str, Any]] = [("host", "x"), ("content-type", case.content_type), length]
    headers += bearer(case.key).items()
    scope = {**SCOPE, "path": case.path, "raw_path": case.path.encode(), "query_string": b""}
    scope["headers"] = [(k.lower().encode(), str(v).encode()) for k, v in headers]
    answer: dict[str, Any] = {"status": CLIENT_CLOSED, "body": b""}

    async def receive() -> dict[str, Any]:
        if not starts:
            return {"type": "http.disconnect"}
        start = starts.pop(0)
        more = bool(starts) or leave_after is not None
        piece = bytes(view[start : start + PIECE])  # a copy: the app's alone
        return {"type": "http.request", "body": piece, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    error = json.loads(answer["body"]).get("error", {}) if answer["body"] else {}
    code: str = error.get("code", "")
    return answer["status"], code


def left_behind(send: Callable[[], Any], most: int) -> tuple[set[Any], int]:
    """What REQUESTS calls of ``send`` answer, and the bytes they leave behind, collector off:
    polled until at most ``most`` (a worker thread lets go of its last call's error, and the
    frames it holds, a moment after the answer went out), for up to SETTLE_S."""
    gc.collect()
    tracemalloc.start()
    gc.disable()
    try:
        before = tracemalloc.get_traced_memory()[0]
        answers = {send() for _ in range(REQUESTS)}
        deadline = time.monotonic() + SETTLE_S
        while (left := tracemalloc.get_traced_memory()[0] - before) > most:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)  # a poll to SETTLE_S; what is still left is returned, not raised
        return answers, left
    finally:
        gc.enable()
        tracemalloc.stop()


def measured(
    client: TestClient, case: Case, send: Callable[[], Any], size: int
) -> tuple[set[Any], int]:
    """``case`` set up, one warm-up call (caches filled, worker threads started) that must
    answer as expected, then :func:`left_behind`; the set-up undone whatever happens."""
    undo = case.setup(client) if case.setup else None
    try:
        assert send() == {case.expected}
        return left_behind(send, size // 2)
    finally:
        if undo:
            undo()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_refused_bodies_are_freed_without_the_collector(client: TestClient, case: Case) -> None:
    body = case.body()
    size = len(body)

    async def together() -> frozenset[tuple[int, str]]:
        return frozenset(
            await asyncio.gather(*(post(client.app, case, body) for _ in case.at_once))
        )

    def send() -> frozenset[tuple[int, str]]:
        return client.portal.call(together)

    answers, left = measured(client, case, send, size)
    assert answers == {frozenset({case.expected})}
    assert left < size // 2, (
        f"{REQUESTS} refused bodies of {size:,} bytes left {left:,} bytes behind until a collection"
    )
