"""The OpenAPI document of a real gateway names the job event stream's 503 `too_many_streams`
(past FDL_MAX_EVENT_STREAMS open streams), not only a model server or Redis away."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx

from harness.gateway import Gateway


def test_the_events_route_documents_too_many_streams(
    lone_gateway: Callable[..., AbstractContextManager[Gateway]], redis_url: str
) -> None:
    with lone_gateway("gateway-events-docs", redis_url) as gateway:
        schema = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    responses = schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]
    assert "200" in responses and "404" in responses
    refused = responses["503"]
    assert "too_many_streams" in refused["description"], refused
    assert (
        "FDL_MAX_EVENT_STREAMS" in refused["description"]
        and "Retry-After" in refused["description"]
    )
    assert refused["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
