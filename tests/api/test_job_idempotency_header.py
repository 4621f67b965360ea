"""The ``Idempotency-Key`` header of ``POST /v1/jobs`` as it comes over the wire, spaces and tabs
around it included (which httpx will not send): sent as raw HTTP/1.1 to the shared gateway."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import httpx

from harness.gateway import ADMIN_KEY, Gateway, bearer

SPEC = {"model": "mnist_mlp", "epochs": 2}


def submit(gateway: Gateway, key: str) -> httpx.Response:
    headers = {**bearer(ADMIN_KEY), "Idempotency-Key": key}
    return httpx.post(f"{gateway.url}/v1/jobs", json=SPEC, headers=headers, timeout=60)


def post_raw(gateway: Gateway, key_line: bytes) -> tuple[int, dict[str, Any]]:
    """POST /v1/jobs with the Idempotency-Key line as given (httpx refuses a value that ends in
    spaces); the status and the JSON body."""
    host, port = gateway.url.removeprefix("http://").split(":")
    body = json.dumps(SPEC).encode()
    request = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + key_line
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def test_spaces_around_a_key_are_not_part_of_it(gateway: Gateway) -> None:
    """RFC 9110 field values: the spaces and tabs around them are not part of them."""
    key = str(uuid.uuid4())
    first = submit(gateway, key)
    assert first.status_code == 202, first.text
    for line in (
        b"Idempotency-Key: " + key.encode() + b"  \t ",
        b"Idempotency-Key:\t" + key.encode(),
    ):
        status, body = post_raw(gateway, line)
        assert status == 202 and body["id"] == first.json()["id"], (line, status, body)
    status, body = post_raw(gateway, b"Idempotency-Key:    \t")
    assert status == 422 and body["error"]["message"].startswith("Idempotency-Key is empty"), body
