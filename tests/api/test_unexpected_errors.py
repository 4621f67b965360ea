"""A bug in a route is answered as every error is: JSON, and with the request id that its log
line carries (in-process, on the real app built by ``api.main``'s factory)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from harness.gateway import inprocess_settings
from harness.model_server import ModelServer


def test_an_unexpected_error_is_a_json_500_with_the_request_id(
    redis_url: str, route_model_server: ModelServer
) -> None:
    """The route added here raises; Starlette's outermost error middleware answers it, outside
    the middleware that adds the request id to every other answer."""
    app = create_app(inprocess_settings(redis_url, route_model_server, database=3))

    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"] == "trace-me-42"
    assert "trace-me-42" in response.json()["error"]["message"]
