"""Hostile request bodies and headers, spoken to an in-process gateway app over ASGI: each gets a
4xx JSON answer (or, for a client that left, a 4xx in the metrics and access log), with the
classify fast path on and off, and an idle connection holds none of the body budget."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import REGISTRY
from starlette.types import Message, Receive, Scope

from api.main import create_app
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, inprocess_settings
from harness.model_server import ModelServer

CLASSIFY = "/v1/models/digits:classify"
PREPROCESS = "/v1/models/digits:preprocess"


def _portal(client: TestClient) -> BlockingPortal:
    """The loop the app runs in (TestClient's, while its ``with`` block lasts)."""
    assert client.portal is not None
    return client.portal


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-path"], scope="module")
def served(
    request: pytest.FixtureRequest, redis_url: str, route_model_server: ModelServer
) -> Iterator[tuple[FastAPI, TestClient]]:
    settings = inprocess_settings(
        redis_url, route_model_server, database=6, classify_fast_path=request.param
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield app, client


def _scope(path: str, headers: dict[str, str], method: str = "POST") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _call(app: FastAPI, scope: Scope, receive: Receive) -> tuple[int, Any]:
    """The app's status and JSON body (None before any answer); exceptions propagate."""
    answer: dict[str, Any] = {"status": None, "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    body = json.loads(answer["body"]) if answer["body"] else None
    return answer["status"], body


def _feeding(*chunks: bytes, then: Message | None = None) -> Receive:
    """Receives ``chunks`` as the body, then ``then`` (default: nothing more, ever)."""
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1 or then is not None}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return then
        await asyncio.Event().wait()  # an idle client: never sends another byte
        raise AssertionError("unreachable")

    return receive


def _requests(status: str) -> float:
    value = REGISTRY.get_sample_value(
        "fdl_gateway_requests_total",
        {"route": "/v1/models/{model}:classify", "method": "POST", "model": "", "status": status},
    )
    return value or 0.0


def _auth(content_type: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLASSIFY_KEY}", "Content-Type": content_type}


def test_content_length_padded_with_zeros(served: tuple[FastAPI, TestClient]) -> None:
    """Over 4300 digits: Python's int() refuses them; the value is what counts (RFC 9110)."""
    app, client = served
    padded = "0" * 5000 + str(len(BLANK_PNG))
    headers = {**_auth("image/png"), "Content-Length": padded}
    got, body = _portal(client).call(_call, app, _scope(CLASSIFY, headers), _feeding(BLANK_PNG))
    assert got == 200, body
    headers["Content-Length"] = "0" * 5000 + "9" * 50
    got, body = _portal(client).call(_call, app, _scope(CLASSIFY, headers), _feeding(BLANK_PNG))
    assert (got, body["error"]["code"]) == (413, "body_too_large"), body


@pytest.mark.parametrize("path", [CLASSIFY, PREPROCESS])
def test_json_integer_over_4300_digits_is_invalid_json(
    served: tuple[FastAPI, TestClient], path: str
) -> None:
    _, client = served
    b64 = base64.b64encode(BLANK_PNG).decode()
    body = '{"instances": [{"b64": "' + b64 + '"}], "top_k": 1' + "0" * 5000 + "}"
    response = client.post(path, content=body, headers=_auth("application/json"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_json"


def test_json_of_millions_of_objects_is_refused_before_parsing(
    served: tuple[FastAPI, TestClient],
) -> None:
    """3.3 million ``{}`` (10 MB) would take ~250 MB as Python objects."""
    _, client = served
    body = ('{"x": [' + ",".join(["{}"] * 3_300_000) + '], "instances": []}').encode()
    tracemalloc.start()
    try:
        response = client.post(CLASSIFY, content=body, headers=_auth("application/json"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "json_too_complex"
    assert peak < 4 * len(body), f"{peak / 1e6:.0f} MB for a {len(body) / 1e6:.0f} MB body"


def test_large_json_body_still_classifies(served: tuple[FastAPI, TestClient]) -> None:
    """A body over the on-loop threshold is parsed in a worker thread: same answer."""
    _, client = served
    noise = (np.random.default_rng(0).random((400, 400)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    instance = {"b64": base64.b64encode(buffer.getvalue()).decode()}
    body = json.dumps({"instances": [instance, instance], "top_k": 2})
    assert len(body) > 256 * 1024
    response = client.post(CLASSIFY, content=body, headers=_auth("application/json"))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


@pytest.mark.parametrize("version", [True, "1", 1.0])
def test_label_version_must_be_an_integer(
    served: tuple[FastAPI, TestClient], version: object
) -> None:
    _, client = served
    response = client.post(
        "/v1/models/digits/labels/canary",
        json={"version": version},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("content_type", ["image/png", "application/json", "multipart/form-data"])
def test_client_leaving_mid_body_is_a_499(
    served: tuple[FastAPI, TestClient], content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, client = served
    if content_type.startswith("multipart"):
        content_type += "; boundary=xx"
    headers = {**_auth(content_type), "Content-Length": "1000"}
    receive = _feeding(b"--xx\r\n", then={"type": "http.disconnect"})
    before = _requests("499")
    with caplog.at_level(logging.INFO, logger="fdl.gateway.access"):
        # Without the fix ClientDisconnect escapes the app ("Exception in ASGI application").
        _portal(client).call(_call, app, _scope(CLASSIFY, headers), receive)
    assert _requests("499") == before + 1
    assert [r.status for r in caplog.records if r.name == "fdl.gateway.access"] == [499]  # type: ignore[attr-defined]


def test_idle_connections_hold_no_body_budget(served: tuple[FastAPI, TestClient]) -> None:
    """Four connections that declare 32 MiB of bodies and send none must not starve an honest
    1 MB upload (the budget, FDL_BODY_BUDGET_BYTES, is 32 MiB)."""
    app, client = served
    photo = (np.random.default_rng(0).random((600, 600, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "PNG")
    upload = buffer.getvalue()
    assert len(upload) > 256 * 1024

    async def scenario() -> tuple[int, Any]:
        waiting = [asyncio.Event() for _ in range(4)]

        def idle(event: asyncio.Event) -> Receive:
            async def receive() -> Message:
                event.set()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            return receive

        sizes = (10 * 2**20, 10 * 2**20, 10 * 2**20, 2 * 2**20)
        idlers = [
            asyncio.create_task(
                _call(
                    app,
                    _scope(CLASSIFY, {**_auth("image/png"), "Content-Length": str(size)}),
                    idle(event),
                )
            )
            for size, event in zip(sizes, waiting, strict=True)
        ]
        try:
            for event in waiting:  # each is past its headers, waiting for its body
                await event.wait()
            headers = {**_auth("image/png"), "Content-Length": str(len(upload))}
            half = len(upload) // 2
            return await _call(
                app, _scope(CLASSIFY, headers), _feeding(upload[:half], upload[half:])
            )
        finally:
            for task in idlers:
                task.cancel()
            await asyncio.gather(*idlers, return_exceptions=True)

    status, body = _portal(client).call(scenario)
    assert status == 200, body
