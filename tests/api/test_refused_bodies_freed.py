"""A refused image's body is freed when its answer is sent, by reference counting alone.

Images decode in a worker thread (anyio's, through Starlette's ``run_in_threadpool``). An error
raised there came back holding, in its traceback, anyio's frame that awaited it; that frame held
the Future, and the Future the error: a reference cycle, through the request's own frames, that
kept each refused body (up to FDL_MAX_BODY_BYTES, 10 MB; twice that for a multipart body, read
and parsed) until a full collection. 10 refused bodies of 9.5 MB left 96 MB (raw) and 191 MB
(multipart) behind with the collector off, whatever the refusal (422 corrupt_image, 415).

The real app in-process (a real model server and Redis behind it), the collector off while the
requests run, the memory Python holds traced: what the requests leave behind is a fraction of
one body, not one body per request."""

from __future__ import annotations

import gc
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from harness.gateway import CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

CLASSIFY = "/v1/models/digits:classify"
SIZE = 9_500_000  # under FDL_MAX_BODY_BYTES (10 MiB)
REQUESTS = 8
BOUNDARY = "refused-body-boundary"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def garbage_png() -> bytes:
    """A valid PNG header (1000x1000 grey) and an IDAT of random bytes: opened, then 422."""
    header = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 1000, 1000, 8, 0, 0, 0, 0)
    )
    noise = np.random.default_rng(0).bytes(SIZE - len(header) - 12 - 12)
    return header + chunk(b"IDAT", noise) + chunk(b"IEND", b"")


def multipart(data: bytes) -> bytes:
    """The multipart body, built here: the test client then sends this very object (its own
    encoding would be a copy that the test client itself keeps in a cycle)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def client(redis_url: str, route_model_server: ModelServer) -> Iterator[TestClient]:
    settings = inprocess_settings(redis_url, route_model_server, database=7)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("content_type", "wrap", "expected"),
    [
        ("image/png", lambda data: data, (422, "corrupt_image")),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart, (422, "corrupt_image")),
        ("image/jpeg", lambda data: b"\xff\xd8\xff\xe0" + data[4:], (415, "unsupported_image")),
    ],
    ids=["raw-png", "multipart-png", "raw-not-a-jpeg"],
)
def test_refused_bodies_are_freed_without_the_collector(
    client: TestClient, content_type: str, wrap: Callable[[bytes], bytes], expected: tuple[int, str]
) -> None:
    body = wrap(garbage_png())
    size = len(body)
    headers = {**bearer(CLASSIFY_KEY), "Content-Type": content_type}

    def send() -> tuple[int, str]:
        response = client.post(CLASSIFY, content=body, headers=headers)
        return response.status_code, response.json()["error"]["code"]

    assert send() == expected  # warmed up: caches filled, worker threads started
    gc.collect()
    tracemalloc.start()
    gc.disable()
    try:
        before = tracemalloc.get_traced_memory()[0]
        answers = {send() for _ in range(REQUESTS)}
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        gc.enable()
        tracemalloc.stop()
    assert answers == {expected}
    assert left < size // 2, (
        f"{REQUESTS} refused bodies of {size:,} bytes left {left:,} bytes behind until a collection"
    )
