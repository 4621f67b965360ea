"""How the shared gateway reads JSON bodies and custom methods, over real HTTP: a body that does
not parse says what and where (nesting, long integers, bytes that are not UTF-8), a key given twice
is refused on every JSON route, an Idempotency-Key's non-ASCII character is named as sent, and a
custom method's colon counts only when sent as ``:`` (``%3A`` is data, RFC 3986)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from fdl.job_records import INDEX_KEY
from harness.gateway import BLANK_PNG, Gateway

JOBS = "/v1/jobs"
LABEL = "/v1/models/digits/labels/dupcheck"
CLASSIFY = "/v1/models/digits:classify"
KEYED = pytest.mark.parametrize("path", [JOBS, LABEL], ids=["jobs", "label"])
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


# 1. Bodies that do not parse: FastAPI's 400 "There was an error parsing the body" said nothing.


@KEYED
def test_nesting_past_the_recursion_limit_is_json_too_deep(client: httpx.Client, path: str) -> None:
    error = _error(client.post(path, content=b"[" * 30000, headers=JSON), 400, "json_too_deep")
    assert error["message"].startswith("the JSON body is nested too deeply: arrays and objects "), (
        error
    )
    assert "levels deep at line 1, column " in error["message"], error


@KEYED
def test_an_integer_over_4300_digits_is_named_with_its_place(
    client: httpx.Client, path: str
) -> None:
    body = b'{"version": ' + b"9" * 5000 + b"}"
    error = _error(client.post(path, content=body, headers=JSON), 422, "invalid_request")
    reason = (
        "not valid JSON: an integer of 5000 digits at line 1, column 13 (character 12); "
        "integers may have at most 4300 digits"
    )
    assert error["message"] == f"body: {reason}", error
    assert error["details"] == [{"field": "body", "message": reason}]


@KEYED
def test_a_body_that_is_not_utf8_names_the_byte(client: httpx.Client, path: str) -> None:
    body = b'{"model": "mnist_mlp\xff"}'
    error = _error(client.post(path, content=body, headers=JSON), 422, "invalid_request")
    assert error["message"] == (
        "body: not UTF-8 at byte offset 20 (0xFF: invalid start byte); send JSON in UTF-8"
    ), error


def test_a_syntax_error_keeps_its_answer(client: httpx.Client) -> None:
    error = _error(client.post(JOBS, content=b'{"model":', headers=JSON), 422, "invalid_request")
    assert error["message"].startswith("body: not valid JSON at character 9"), error


def test_classify_says_the_same_of_bytes_that_are_not_utf8(
    client: httpx.Client, gateway: Gateway
) -> None:
    body = b'{"instances": [{"b64": "\xc3("}]}'
    response = client.post(CLASSIFY, content=body, headers=gateway.classifier() | JSON)
    error = _error(response, 422, "invalid_json")
    assert error["message"] == (
        "the body is not UTF-8 at byte offset 24 (0xC3: invalid continuation byte); "
        "send JSON in UTF-8"
    ), error


# 2. A key given twice: json.loads keeps the last, a reader of the first sees another request.


def test_a_job_spec_with_a_key_given_twice_queues_nothing(
    client: httpx.Client, redis_url: str
) -> None:
    db = redis.Redis.from_url(redis_url)
    jobs = db.zcard(INDEX_KEY)
    body = b'{"model": "mnist_logreg", "model": "cifar10_cnn"}'
    error = _error(client.post(JOBS, content=body, headers=JSON), 422, "invalid_request")
    assert error["details"] == [
        {
            "field": "model",
            "message": "given 2 times in the top-level object; send each key once (readers "
            "differ on which one counts)",
        }
    ], error
    assert db.zcard(INDEX_KEY) == jobs


def test_a_nested_key_given_twice_is_named_by_its_path(client: httpx.Client) -> None:
    body = b'{"model": "mnist_mlp", "optimizer": {"learning_rate": 0.1, "learning_rate": 0.2}}'
    error = _error(client.post(JOBS, content=body, headers=JSON), 422, "invalid_request")
    assert error["message"].startswith(
        "optimizer.learning_rate: given 2 times in the object at optimizer;"
    ), error


def test_a_label_change_with_a_key_given_twice_changes_nothing(client: httpx.Client) -> None:
    # The last "version" names no version: before, it answered 404 for version 99.
    response = client.post(LABEL, content=b'{"version": 1, "version": 99}', headers=JSON)
    error = _error(response, 422, "invalid_request")
    assert error["details"][0]["field"] == "version", error
    assert "dupcheck" not in json.dumps(client.get("/v1/models/digits").json()["labels"])


def test_a_classify_body_with_a_key_given_twice_is_invalid_json(
    client: httpx.Client, gateway: Gateway
) -> None:
    b64 = base64.b64encode(BLANK_PNG).decode()
    for body, says in (
        ({"instances": [{"b64": b64}]}, "the JSON body gives the key 'top_k' 2 times in the "),
        (None, "the JSON body gives the key 'b64' 2 times in the object at instances.0;"),
    ):
        raw = (
            json.dumps(body)[:-1] + ', "top_k": 1, "top_k": 3}'
            if body
            else '{"instances": [{"b64": "' + b64 + '", "b64": "' + b64 + '"}]}'
        )
        response = client.post(CLASSIFY, content=raw, headers=gateway.classifier() | JSON)
        assert _error(response, 422, "invalid_json")["message"].startswith(says), response.text


# 3. A non-ASCII Idempotency-Key is named as the client sent it, not as Latin-1 reads it.


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (b"caf\xc3\xa9", "holds '\u00e9' (U+00E9, UTF-8 bytes C3 A9) at character 4"),
        (b"caf\xe9", "holds the byte 0xE9 at byte 4 (the key is not UTF-8)"),
        (b"\xc3\xa9" * 200, "is 400 bytes long"),  # 200 characters, 400 bytes
    ],
    ids=["utf8", "latin1", "long"],
)
def test_a_non_ascii_idempotency_key_is_named_as_sent(
    client: httpx.Client, key: bytes, says: str
) -> None:
    response = client.post(JOBS, json={"model": "mnist_mlp"}, headers={"Idempotency-Key": key})
    error = _error(response, 422, "invalid_idempotency_key")
    assert error["message"].startswith(f"Idempotency-Key {says}: it must be 1 to 255"), error


# 4. A custom method's colon sent as %3A is part of the name before it.


def _raw_request(gateway: Gateway, method: str, target: str, body: bytes = b"") -> dict[str, Any]:
    """The status and error of a request whose target goes over the wire exactly as given."""
    host, port = gateway.url.removeprefix("http://").split(":")
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        f"Authorization: {gateway.admin()['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode() + body)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    status_line, _, payload = reply.partition(b"\r\n\r\n")
    return {"status": int(status_line.split(b" ", 2)[1]), **json.loads(payload)}


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/v1/models/digits/labels/stable%3Arollback", b'{"version": 1}'),
        ("POST", "/v1/models/digits/labels/stable%3arollback", b'{"version": 1}'),
        ("DELETE", "/v1/models/digits/labels/stable%3Arollback", b""),
    ],
    ids=["rollback", "lowercase-hex", "delete"],
)
def test_an_encoded_colon_is_part_of_the_label_name(
    gateway: Gateway, method: str, target: str, body: bytes
) -> None:
    """Before, the rollback route ran (409 no_older_version for digits' stable, at v1)."""
    answer = _raw_request(gateway, method, target, body)
    assert answer["status"] == 422, answer
    assert answer["error"]["details"][0]["field"] == "path.label", answer


def test_an_encoded_colon_is_part_of_the_model_name(gateway: Gateway) -> None:
    """Before, a 405 for the classify route asked with GET."""
    answer = _raw_request(gateway, "GET", "/v1/models/digits%3Aclassify")
    assert answer["status"] == 422, answer
    assert answer["error"]["details"][0]["field"] == "path.model", answer


def test_a_custom_method_may_spell_its_letters_encoded(gateway: Gateway) -> None:
    """Only the colon must be itself: ``%72`` is ``r``, an unreserved character."""
    answer = _raw_request(gateway, "POST", "/v1/models/digits/labels/nosuch:%72ollback")
    assert answer["status"] == 404, answer
    assert answer["error"]["code"] == "label_not_found", answer


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/v1/models/digits%3Aclassify", 405),  # the path of a model named "digits:classify"
        ("/v1/models/digits%3Apreprocess", 405),
        ("/v1/models/digits/versions/1%3Aclassify", 404),
    ],
)
def test_an_encoded_colon_classifies_nothing(gateway: Gateway, target: str, status: int) -> None:
    """Before, the classify and preprocess routes (and the classify fast path) ran."""
    answer = _raw_request(gateway, "POST", target, b'{"instances": []}')
    assert answer["status"] == status, answer


def test_classify_may_spell_its_letters_encoded(gateway: Gateway) -> None:
    b64 = base64.b64encode(BLANK_PNG).decode()
    body = json.dumps({"instances": [{"b64": b64}]}).encode()
    response = httpx.post(
        f"{gateway.url}/v1/models/digits:%63lassify",
        content=body,
        headers=gateway.classifier() | JSON,
        timeout=30,
    )
    assert response.status_code == 200, response.text
