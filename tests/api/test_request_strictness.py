"""How the gateway reads a request's path, query string and content type, in-process (the real
app over a real model server and Redis): integers in plain decimal only, ``top_k`` in the query
string for every body kind, no slash redirects, 405s that name every allowed method, and 415s for
JSON routes' bodies of another type."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routers.models import ACTIONS
from harness.gateway import ADMIN_KEY, BLANK_PNG, CLASSIFY_KEY, bearer, inprocess_settings
from harness.model_server import ModelServer

ADMIN, CLASSIFIER = bearer(ADMIN_KEY), bearer(CLASSIFY_KEY)
SPEC = b'{"model": "mnist_cnn", "epochs": 1}'


@pytest.fixture(scope="module")
def client(redis_url: str, route_model_server: ModelServer) -> Iterator[TestClient]:
    settings = inprocess_settings(redis_url, route_model_server, database=10)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.text
    return response.json()["error"]


# 1. Integers in paths and query strings: ASCII digits only (Python's int() and pydantic's lax
# mode read "1_0" as 10, "+5" and " 5 " as 5).


@pytest.mark.parametrize("raw", ["5_0", "+5", "%205%20", "%0A3", "5.0", "-5", "%D9%A3", "0x10"])
@pytest.mark.parametrize("name", ["limit", "offset"])
def test_job_listing_integers_are_plain_decimal(client: TestClient, name: str, raw: str) -> None:
    response = client.get(f"/v1/jobs?{name}={raw}", headers=ADMIN)
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == "invalid_request"
    assert error["details"][0]["field"] == f"query.{name}"
    assert "ASCII digits" in error["message"]


def test_job_listing_integers_keep_their_range_and_leading_zeros(client: TestClient) -> None:
    response = client.get("/v1/jobs?limit=007&offset=0", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert (response.json()["limit"], response.json()["offset"]) == (7, 0)
    too_many = client.get("/v1/jobs?limit=501", headers=ADMIN)
    assert too_many.status_code == 422 and "less than or equal to 500" in too_many.text


@pytest.mark.parametrize("raw", ["1_0", "+1", "%201"])
def test_a_version_in_the_path_is_plain_decimal(client: TestClient, raw: str) -> None:
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    path = f"/v1/models/promo/versions/{raw}:classify"
    response = client.post(path, files=files, headers=CLASSIFIER)
    assert response.status_code == 422, response.text
    assert _error(response)["details"][0]["field"] == "path.version"


@pytest.mark.parametrize("raw", ["1_0", "+1", "%201"])
def test_the_ui_routes_versions_are_plain_decimal(client: TestClient, raw: str) -> None:
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    preprocess = client.post(
        f"/v1/models/promo:preprocess?version={raw}", files=files, headers=CLASSIFIER
    )
    assert preprocess.status_code == 422, preprocess.text
    assert _error(preprocess)["details"][0]["field"] == "query.version"
    report = client.get(f"/v1/models/promo/versions/{raw}/report/evaluation.json", headers=ADMIN)
    assert report.status_code == 422, report.text
    assert _error(report)["details"][0]["field"] == "path.version"


def test_the_openapi_document_still_shows_the_integers_ranges(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["get"]["parameters"]
    limit = next(p for p in parameters if p["name"] == "limit")["schema"]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 500)


# 2. top_k in the query string, whatever the body's kind.


def _top_k_lengths(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [len(p["top_k"]) for p in response.json()["predictions"]]


def test_query_top_k_applies_to_multipart_and_json_bodies(client: TestClient) -> None:
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    url = "/v1/models/digits:classify?top_k=5"
    assert _top_k_lengths(client.post(url, files=files, headers=CLASSIFIER)) == [5]
    instances = {"instances": [{"b64": base64.b64encode(BLANK_PNG).decode()}]}
    assert _top_k_lengths(client.post(url, json=instances, headers=CLASSIFIER)) == [5]
    same = {**instances, "top_k": 5}
    assert _top_k_lengths(client.post(url, json=same, headers=CLASSIFIER)) == [5]
    body_only = {**instances, "top_k": 2}
    plain = "/v1/models/digits:classify"
    assert _top_k_lengths(client.post(plain, json=body_only, headers=CLASSIFIER)) == [2]


def test_query_and_body_top_k_must_agree(client: TestClient) -> None:
    url = "/v1/models/digits:classify?top_k=5"
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    response = client.post(url, files=files, data={"top_k": "2"}, headers=CLASSIFIER)
    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "invalid_top_k"
    assert "5" in _error(response)["message"] and "2" in _error(response)["message"]


def test_a_bad_query_top_k_is_refused_for_every_body_kind(client: TestClient) -> None:
    files = [("file", ("a.png", BLANK_PNG, "image/png"))]
    response = client.post("/v1/models/digits:classify?top_k=3_0", files=files, headers=CLASSIFIER)
    assert response.status_code == 422, response.text
    assert _error(response)["code"] == "invalid_top_k"


# 3. No slash redirects (Starlette's 307 took its Location from the client's Host header).


@pytest.mark.parametrize("path", ["/v1/jobs/", "/v1/models/", "/healthz/", "/docs/"])
def test_a_trailing_slash_is_not_redirected(client: TestClient, path: str) -> None:
    headers = {**ADMIN, "Host": "evil.example"}
    response = client.get(path, headers=headers, follow_redirects=False)
    assert response.status_code == 404, (response.status_code, response.headers)
    assert "location" not in response.headers
    assert _error(response)["code"] == "not_found"


# 4. 405 for a custom method asked with another method, naming every allowed method.


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/models/promo:classify", "POST"),
        ("HEAD", "/v1/models/promo:classify", "POST"),
        ("DELETE", "/v1/models/promo/labels/stable:rollback", "POST"),
        ("GET", "/v1/models/promo:preprocess", "POST"),
        ("PUT", "/v1/jobs", "GET, HEAD, POST"),
        ("PUT", "/v1/jobs/abc", "DELETE, GET, HEAD"),
        ("POST", "/v1/models/promo", "GET, HEAD"),
    ],
)
def test_405_names_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path, headers=ADMIN)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    if method != "HEAD":
        assert _error(response)["code"] == "method_not_allowed"


def test_a_model_name_with_another_colon_is_still_judged_as_a_name(client: TestClient) -> None:
    response = client.get("/v1/models/promo:other", headers=CLASSIFIER)
    assert response.status_code == 422, response.text
    assert _error(response)["details"][0]["field"] == "path.model"


def test_actions_lists_every_custom_method_of_the_app(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    suffixes = {match.group(1) for path in paths if (match := re.search(r"\}:(\w+)$", path))}
    assert suffixes == set(ACTIONS)


# 5. JSON routes: 415 for another content type, and a JSON syntax error that says so.


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded"],
    ids=["none", "text", "form"],
)
@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/jobs", SPEC), ("/v1/models/promo/labels/canary", b'{"version": 1}')],
    ids=["submit", "label"],
)
def test_json_routes_refuse_other_content_types_with_415(
    client: TestClient, path: str, body: bytes, content_type: str | None
) -> None:
    headers = ADMIN | ({"Content-Type": content_type} if content_type else {})
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    error = _error(response)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]


def test_the_key_is_still_checked_before_the_content_type(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=SPEC, headers={"Content-Type": "text/plain"})
    assert response.status_code == 401, response.text


def test_an_empty_body_still_says_it_is_missing(client: TestClient) -> None:
    response = client.post("/v1/jobs", headers=ADMIN | {"Content-Type": "text/plain"})
    assert response.status_code == 422, response.text


def test_truncated_json_says_where_it_breaks(client: TestClient) -> None:
    headers = ADMIN | {"Content-Type": "application/json"}
    response = client.post("/v1/jobs", content=b'{"model":', headers=headers)
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["details"][0]["field"] == "body"
    assert error["message"].startswith("body: not valid JSON at character 9"), error["message"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models/digits/labels/stable"])
def test_a_missing_json_body_is_named_body_in_the_details_too(
    client: TestClient, path: str
) -> None:
    """The message said ``body: Field required`` while the details' field was empty."""
    response = client.post(path, headers=ADMIN | {"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["message"] == "body: Field required", error
    assert error["details"] == [{"field": "body", "message": "Field required"}]
    # A field inside the body keeps its own name.
    response = client.post(path, json={}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in _error(response)["details"]] in (["model"], ["version"])
