"""One image as the whole request body (``Content-Type: image/png|jpeg|webp|gif|bmp|tiff`` or
``application/octet-stream``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from harness.gateway import Gateway, post
from harness.mnist import mnist_test_digits, paper_png


def _as(png: bytes, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("L").save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("png", "image/png"),
        ("jpeg", "image/jpeg"),
        ("webp", "image/webp"),
        ("gif", "image/gif"),
        ("bmp", "image/bmp"),
        ("tiff", "image/tiff"),
        ("png", "application/octet-stream"),
    ],
)
def test_raw_body_classifies_as_multipart_does(
    gateway: Gateway, data_dir: Path, fmt: str, content_type: str
) -> None:
    digits, _ = mnist_test_digits(data_dir, 1, offset=20)
    image = _as(paper_png(digits[0]), fmt.upper())
    headers = {**gateway.classifier(), "Content-Type": content_type}
    raw = post(gateway, "/v1/models/digits:classify?top_k=4", content=image, headers=headers)
    assert raw.status_code == 200, raw.text
    files = [("file", (f"d.{fmt}", image, f"image/{fmt}"))]
    multipart = post(gateway, "/v1/models/digits:classify", files=files, data={"top_k": "4"})
    assert multipart.status_code == 200, multipart.text
    assert raw.json()["predictions"] == multipart.json()["predictions"]
    assert len(raw.json()["predictions"][0]["top_k"]) == 4


@pytest.mark.parametrize(
    ("body", "query", "code"),
    [
        (b"", "", "no_image"),
        (b"\x89PNG\r\n\x1a\nnot really a png", "", None),
        (b"\x89PNG", "?top_k=0", "invalid_top_k"),
    ],
    ids=["empty", "corrupt", "bad-top-k"],
)
def test_bad_raw_bodies_are_4xx(gateway: Gateway, body: bytes, query: str, code) -> None:
    headers = {**gateway.classifier(), "Content-Type": "image/png"}
    response = post(gateway, f"/v1/models/digits:classify{query}", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code


def test_a_body_of_another_type_is_told_how_to_send_an_image(gateway: Gateway) -> None:
    """curl --data-binary without -H sends application/x-www-form-urlencoded."""
    headers = {**gateway.classifier(), "Content-Type": "application/x-www-form-urlencoded"}
    response = post(gateway, "/v1/models/digits:classify", content=b"\x89PNG", headers=headers)
    assert response.status_code == 415, response.text
    message = response.json()["error"]["message"]
    assert "'application/x-www-form-urlencoded'" in message and "image/png" in message
