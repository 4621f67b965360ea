"""The classify fast path (api/fastpath.py) answers exactly as FastAPI's routes do.

Two apps on one model server and Redis, the fast path on and off, get the same requests: good
ones, and every kind of bad path parameter, key and body; status, JSON body and the headers a
client acts on must be identical, and so must what the requests add to the gateway's metrics.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from api.fastpath import FastPathMiddleware
from api.main import create_app
from api.routers.classify import fast_routes
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, bearer, inprocess_settings
from harness.mnist import png_bytes
from harness.model_server import ModelServer
from harness.models import sample_images

REQUEST_ID = {"X-Request-Id": "fast-path-test"}
DIGIT_PNG = png_bytes(sample_images((28, 28, 1), 1, seed=3)[0, :, :, 0])
PATHS = [
    "/v1/models/digits:classify",
    "/v1/models/digits/versions/2:classify",
    "/v1/models/digits/versions/99:classify",
    "/v1/models/digits/versions/007:classify",
    "/v1/models/digits/versions/+2:classify",
    "/v1/models/digits/versions/0:classify",
    "/v1/models/digits/versions/4611686018427387905:classify",
    "/v1/models/digits/versions/" + "1" * 20 + ":classify",
    "/v1/models/digits/versions/" + "1" * 4301 + ":classify",  # over int()'s 4300 digits
    "/v1/models/digits/versions/two:classify",
    "/v1/models/digits/labels/stable:classify",
    "/v1/models/digits/labels/no-such-label:classify",
    "/v1/models/digits/labels/123:classify",
    "/v1/models/digits/labels/Stable:classify",
    "/v1/models/no_such_model:classify",
    "/v1/models/Digits:classify",
    "/v1/models/" + "d" * 65 + ":classify",
    "/v1/models/digits%0A:classify",
    "/v1/models/digits:classify/",
]
BODIES: dict[str, dict[str, Any]] = {
    "multipart": {"files": [("file", ("a.png", DIGIT_PNG, "image/png"))]},
    "json-b64": {
        "content": json.dumps(
            {"instances": [{"b64": base64.b64encode(BLANK_PNG).decode()}], "top_k": 2}
        ),
        "headers": {"Content-Type": "application/json"},
    },
    "raw-png": {"content": DIGIT_PNG, "headers": {"Content-Type": "image/png"}},
    "not-an-image": {"content": b"plain text", "headers": {"Content-Type": "image/png"}},
    "bad-json": {"content": b'{"instances": [', "headers": {"Content-Type": "application/json"}},
}
KEYS: dict[str, dict[str, str]] = {
    "classify-key": bearer(CLASSIFY_KEY),
    "admin-key": bearer(ADMIN_KEY),
    "no-key": {},
    "wrong-key": bearer("not-a-key"),
}
COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "x-request-id", "allow")
# Counters, and how many observations each histogram got (their sums are durations).
COUNTED = (
    "fdl_gateway_requests_total",
    "fdl_gateway_request_seconds_count",
    "fdl_gateway_stage_seconds_count",
    "fdl_gateway_predict_call_requests_count",
    "fdl_gateway_images_classified_total",
    "fdl_gateway_upstream_errors_total",
    "fdl_gateway_rate_limited_total",
)


Call = tuple[str, str, str, str]  # method, path, body name, key name
CALLS: list[Call] = [
    *(("POST", path, "raw-png", "classify-key") for path in PATHS),
    *(
        ("POST", "/v1/models/digits/versions/2:classify", body, key)
        for body in sorted(BODIES)
        for key in sorted(KEYS)
    ),
    ("GET", "/v1/models/digits:classify", "none", "classify-key"),
]


def answer(client: TestClient, call: Call) -> tuple[int, Any, dict[str, str | None]]:
    method, path, body_name, key_name = call
    body = BODIES.get(body_name, {})
    headers = {**REQUEST_ID, **KEYS[key_name], **body.get("headers", {})}
    response = client.request(
        method, path, files=body.get("files"), content=body.get("content"), headers=headers
    )
    try:
        payload = response.json()
    except ValueError:
        payload = response.text
    return response.status_code, payload, {h: response.headers.get(h) for h in COMPARED_HEADERS}


def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The process's gateway metrics in ``COUNTED``, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name in COUNTED
    }


@pytest.fixture(scope="module")
def runs(redis_url: str, route_model_server: ModelServer) -> dict[bool, dict[str, Any]]:
    """Each app's answer to every call, and what the calls added to the metrics. One app runs
    at a time: both would register the same collector, and the metrics are the process's."""
    result: dict[bool, dict[str, Any]] = {}
    for fast in (True, False):
        settings = inprocess_settings(
            redis_url, route_model_server, database=4, classify_fast_path=fast
        )
        app = create_app(settings)
        assert (FastPathMiddleware in [m.cls for m in app.user_middleware]) == fast
        with TestClient(app) as client:
            answer(client, CALLS[0])  # the metadata cache and the channel, before counting
            before = counted()
            answers = {call: answer(client, call) for call in CALLS}
            after = counted()
        added = {key: after[key] - before.get(key, 0.0) for key in after}
        result[fast] = {"answers": answers, "metrics": {k: v for k, v in added.items() if v}}
    return result


@pytest.fixture(scope="module")
def answers(runs: dict[bool, dict[str, Any]]) -> dict[bool, dict[Call, Any]]:
    return {fast: run["answers"] for fast, run in runs.items()}


@pytest.mark.parametrize("call", CALLS, ids=[" ".join(call) for call in CALLS])
def test_answers_alike(answers: dict[bool, dict[Call, Any]], call: Call) -> None:
    assert answers[True][call] == answers[False][call]


def test_metrics_alike(runs: dict[bool, dict[str, Any]]) -> None:
    fast, slow = runs[True]["metrics"], runs[False]["metrics"]
    assert fast == slow
    routes = {
        dict(labels).get("route") for name, labels in fast if name.startswith("fdl_gateway_req")
    }
    assert "/v1/models/{model}/versions/{version}:classify" in routes, routes


def test_the_comparison_covers_classifications_and_errors(
    answers: dict[bool, dict[Call, Any]],
) -> None:
    statuses = {status for status, _, _ in answers[True].values()}
    assert {200, 401, 404, 415, 422} <= statuses, statuses


@pytest.mark.parametrize(
    ("path_params", "served"),
    [
        ({"model": "digits"}, True),
        ({"model": "digits", "version": "2"}, True),
        ({"model": "digits", "version": "4611686018427387904"}, True),
        ({"model": "digits", "version": "4611686018427387905"}, False),
        ({"model": "digits", "version": "02"}, False),
        ({"model": "digits", "version": "9" * 20}, False),
        ({"model": "digits", "version": "9" * 4301}, False),
        ({"model": "digits", "version": "٣"}, False),  # a digit, but not an ASCII one
        ({"model": "digits", "label": "stable"}, True),
        ({"model": "digits", "label": "42"}, False),
        ({"model": "Digits"}, False),
    ],
)
def test_fast_path_takes_only_what_fastapi_would_take_unchanged(
    path_params: dict[str, str], served: bool
) -> None:
    by_params = {frozenset(r.route.param_convertors): r for r in fast_routes()}  # type: ignore[attr-defined]
    route = by_params[frozenset(path_params)]
    assert (route.parse(path_params) is not None) == served
