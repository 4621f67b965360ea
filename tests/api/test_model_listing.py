"""``GET /v1/models`` asks the model server about its models concurrently, at most
``LISTING_CONCURRENCY`` at once, and answers as when it asked them in turn: in-process app over a
real model server and Redis, its repository the served one plus empty model folders.

The app's own model-server client is watched (each status call still goes to the model server):
every listing call starts before any answer can be handled, so the most calls in flight is exact,
where timing slow calls would not be.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routers.models import LISTING_CONCURRENCY
from api.serving_client import ServingClient
from harness.gateway import CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

EXTRA = [f"extra_{i:02}" for i in range(LISTING_CONCURRENCY + 3)]  # not served: NOT_FOUND


@pytest.fixture(scope="module")
def client(
    redis_url: str, route_model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    repository = tmp_path_factory.mktemp("listing") / "models"
    shutil.copytree(route_model_server.config_file.parent, repository)
    for name in EXTRA:
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "saved_model.pb").write_bytes(b"")  # a version, not served
    settings = inprocess_settings(redis_url, route_model_server, database=9)
    with TestClient(create_app(settings.model_copy(update={"model_dir": repository}))) as test:
        yield test


@pytest.fixture
def status_calls(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The models asked about, and the most status calls in flight at once."""
    serving: ServingClient = client.app.state.serving  # type: ignore[attr-defined]
    real = serving.model_status
    seen: dict[str, Any] = {"models": [], "in_flight": 0, "most": 0}

    async def watched(model: str, request_id: str | None = None) -> Any:
        seen["models"].append(model)
        seen["in_flight"] += 1
        seen["most"] = max(seen["most"], seen["in_flight"])
        try:
            return await real(model, request_id)
        finally:
            seen["in_flight"] -= 1

    monkeypatch.setattr(serving, "model_status", watched)
    return seen


def test_models_are_asked_about_concurrently(
    client: TestClient, status_calls: dict[str, Any]
) -> None:
    response = client.get("/v1/models", headers=bearer(CLASSIFY_KEY))
    assert response.status_code == 200, response.text
    names = sorted(["digits", "photos", "promo", *EXTRA])
    assert sorted(status_calls["models"]) == names
    assert status_calls["most"] == LISTING_CONCURRENCY  # never more
    # The listing keeps the repository's order and each model's own answer.
    models = response.json()["models"]
    assert [m["name"] for m in models] == names
    by_name = {m["name"]: m for m in models}
    assert by_name["digits"]["versions"][-1]["state"] == "AVAILABLE"
    for name in EXTRA:
        assert by_name[name]["versions"][0]["state"] == "NOT_LOADED"
        assert by_name[name]["server_error"] is None
    # One model alone, through the same code, says the same.
    digits = client.get("/v1/models/digits", headers=bearer(CLASSIFY_KEY)).json()
    assert {k: v for k, v in digits.items() if k != "input"} == by_name["digits"]
