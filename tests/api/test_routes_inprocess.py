"""The gateway's routes in-process: FastAPI's TestClient on the real app (``api.main``'s app
factory) against a real model server and a real Redis, so that a route change is tested in
seconds. The process-level tests beside it cover what only a real process shows (HTTP limits,
logs, restarts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

ADMIN, CLASSIFIER = bearer(ADMIN_KEY), bearer(CLASSIFY_KEY)


def png_part(png: bytes = BLANK_PNG, name: str = "a.png") -> tuple[str, tuple[str, bytes, str]]:
    return ("file", (name, png, "image/png"))


@pytest.fixture(scope="module")
def client(redis_url: str, route_model_server: ModelServer) -> Iterator[TestClient]:
    """The app built from explicit settings (harness.gateway.inprocess_settings)."""
    settings = inprocess_settings(redis_url, route_model_server, database=3)
    with TestClient(create_app(settings)) as test_client:  # runs the lifespan: start-up, close
        yield test_client


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "model_server": "ok"}


def test_classify_one_image(client: TestClient) -> None:
    response = client.post("/v1/models/digits:classify", files=[png_part()], headers=CLASSIFIER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits" and body["version"] == 2
    (prediction,) = body["predictions"]
    assert prediction["label"] == str(prediction["class_id"])
    assert len(prediction["top_k"]) == 3


def test_classify_a_batch(client: TestClient) -> None:
    files = [png_part(name=f"{i}.png") for i in range(4)]
    response = client.post("/v1/models/digits:classify", files=files, headers=CLASSIFIER)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 4


@pytest.mark.parametrize(
    ("path", "png", "statuses", "code"),
    [
        ("/v1/models/digits:classify", b"this is text", (415, 422), None),
        ("/v1/models/no_such_model:classify", BLANK_PNG, (404,), "model_not_found"),
        ("/v1/models/digits/versions/99:classify", BLANK_PNG, (404,), None),
    ],
    ids=["not-an-image", "unknown-model", "unknown-version"],
)
def test_classify_errors_are_json(
    client: TestClient, path: str, png: bytes, statuses: tuple[int, ...], code: str | None
) -> None:
    response = client.post(path, files=[png_part(png)], headers=CLASSIFIER)
    assert response.status_code in statuses, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    assert code is None or error["code"] == code


def test_model_list_and_metadata(client: TestClient) -> None:
    listing = client.get("/v1/models", headers=CLASSIFIER)
    assert listing.status_code == 200, listing.text
    assert {m["name"] for m in listing.json()["models"]} == {"digits", "photos", "promo"}
    photos = client.get("/v1/models/photos", headers=CLASSIFIER).json()
    assert {v["version"] for v in photos["versions"]} == {1}
    assert client.get("/v1/models/nothing_here", headers=CLASSIFIER).status_code == 404


def test_promote_and_roll_back(client: TestClient) -> None:
    def stable() -> int:
        response = client.post(
            "/v1/models/promo/labels/stable:classify", files=[png_part()], headers=CLASSIFIER
        )
        assert response.status_code == 200, response.text
        return int(response.json()["version"])

    promoted = client.post("/v1/models/promo/labels/stable", json={"version": 3}, headers=ADMIN)
    assert promoted.status_code == 200, promoted.text
    assert stable() == 3
    rolled_back = client.post("/v1/models/promo/labels/stable", json={"version": 2}, headers=ADMIN)
    assert rolled_back.status_code == 200, rolled_back.text
    assert stable() == 2
    assert client.get("/v1/models/promo", headers=CLASSIFIER).json()["labels"] == {"stable": 2}


def test_job_submit_get_and_list(client: TestClient) -> None:
    submitted = client.post("/v1/jobs", json={"model": "mnist_logreg", "epochs": 1}, headers=ADMIN)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    job = client.get(f"/v1/jobs/{job_id}", headers=ADMIN)
    assert job.status_code == 200 and job.json()["status"] == "queued", job.text
    listed = client.get("/v1/jobs", headers=ADMIN).json()["jobs"]
    assert job_id in [j["id"] for j in listed]
    bad = client.post("/v1/jobs", json={"model": "no_such_architecture"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["code"]
    cancelled = client.delete(f"/v1/jobs/{job_id}", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/jobs", {}, 401),
        ("GET", "/v1/jobs", bearer("wrong-key"), 401),
        ("GET", "/v1/jobs", CLASSIFIER, 403),
        ("POST", "/v1/models/promo/labels/canary", CLASSIFIER, 403),
        ("POST", "/v1/models/digits:classify", {}, 401),
    ],
    ids=["no-key", "wrong-key", "classifier-jobs", "classifier-promote", "keyless-classify"],
)
def test_auth_failures(
    client: TestClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    kwargs: dict = {"json": {"version": 1}} if path.endswith("canary") else {}
    if path.endswith(":classify"):
        kwargs = {"files": [png_part()]}
    response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in ("unauthorized", "forbidden")


def test_settings_are_the_apps_own(client: TestClient) -> None:
    """The app keeps the settings it was built with (``app.state.settings``)."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert settings.classify_open is False
    assert Path(settings.model_dir).name == "models"


def test_a_job_the_broker_refuses_is_not_left_queued(client: TestClient, redis_url: str) -> None:
    """The store takes the record, then the broker (a real Celery client, pointed at a port where
    nothing listens) refuses the message: 503, and the record ends failed, not queued forever."""
    from fdl.jobs import JobStore
    from fdl.queue import make_celery
    from harness.procs import free_port

    app_state = client.app.state  # type: ignore[attr-defined]
    working = app_state.celery
    app_state.celery = make_celery(f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = client.post("/v1/jobs", json={"model": "mnist_logreg"}, headers=ADMIN)
    finally:
        app_state.celery = working
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "job_store_unavailable"
    store = JobStore.from_url(app_state.settings.require_redis_url())
    records, _ = store.list(None, 1, 0)
    assert records[0]["status"] == "failed", records[0]
    assert "could not be queued" in records[0]["error"]
