"""A corpus of awkward and broken inputs: right status for each, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from harness.corpus import Case, all_cases, image_cases
from harness.gateway import Gateway

CASES = all_cases()


def send(client: httpx.Client, gateway: Gateway, case: Case, model: str) -> httpx.Response:
    url = f"{gateway.url}/v1/models/{model}:classify"
    headers = gateway.classifier()
    if case.file is not None:
        parts = [("file", (case.filename, case.file, "application/octet-stream"))] * case.files
        return client.post(url, files=parts, headers=headers)
    if case.json_body is not None:
        return client.post(url, json=case.json_body, headers=headers)
    assert case.raw is not None
    return client.post(
        url, content=case.raw, headers={**headers, "Content-Type": case.content_type or ""}
    )


def test_corpus_is_large_enough() -> None:
    assert len(image_cases()) >= 50
    names = {c.name for c in CASES}
    for required in (
        "png_truncated_half",
        "zero_bytes",
        "text_named_png",
        "png_bomb_8000x8000",
        "png_header_100000x100000",
        "gif_animated",
        "png_16bit",
        "jpeg_cmyk",
        "jpeg_exif_rotated",
        "png_transparent_dark_ink",
    ):
        assert required in names


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gets_the_right_status(
    client: httpx.Client, gateway: Gateway, case: Case
) -> None:
    response = send(client, gateway, case, "digits")
    assert response.status_code < 500, response.text
    assert response.status_code in case.expected, response.text
    body = response.json()
    if response.status_code == 200:
        assert len(body["predictions"]) == case.files
    else:
        assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]


@pytest.mark.parametrize(
    "name", ["png_16bit", "jpeg_cmyk", "gif_animated", "png_transparent_white_ink", "png_1x1"]
)
def test_odd_images_also_work_for_a_photo_model(
    client: httpx.Client, gateway: Gateway, name: str
) -> None:
    case = next(c for c in CASES if c.name == name)
    response = send(client, gateway, case, "photos")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] in ("cat", "dog", "bird")


def test_body_over_the_limit_is_413_without_content_length(
    client: httpx.Client, gateway: Gateway
) -> None:
    """A chunked body has no Content-Length: the limit is enforced while it streams."""

    def chunks():
        yield b'{"instances": [{"b64": "'
        for _ in range(11):
            yield b"A" * (1024 * 1024)
        yield b'"}]}'

    response = client.post(
        f"{gateway.url}/v1/models/digits:classify",
        content=chunks(),
        headers={**gateway.classifier(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_body_over_the_limit_is_413_with_content_length(
    client: httpx.Client, gateway: Gateway
) -> None:
    big = b"\x89PNG" + b"\x00" * (10 * 1024 * 1024 + 1)
    response = client.post(
        f"{gateway.url}/v1/models/digits:classify",
        files=[("file", ("big.png", big, "image/png"))],
        headers=gateway.classifier(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("with_a_file", [False, True], ids=["alone", "beside a file part"])
def test_file_part_without_a_filename_is_named_not_dropped(
    client: httpx.Client, gateway: Gateway, with_a_file: bool
) -> None:
    """A 'file' part without a filename (aiohttp's add_field without one, curl -F 'file=<a.png')
    is a text field to Starlette: alone it was 422 "send the image(s) as parts named 'file'",
    beside a real file part it was dropped in silence (one prediction for two parts)."""
    png = next(c for c in CASES if c.name == "png_1x1").file
    assert png is not None
    boundary = "b0undary"
    parts = [(b"", png)] + ([(b'; filename="a.png"', png)] if with_a_file else [])
    body = (
        b"".join(
            b'--%s\r\nContent-Disposition: form-data; name="file"%s\r\n\r\n%s\r\n'
            % (boundary.encode(), filename, data)
            for filename, data in parts
        )
        + b"--%s--\r\n" % boundary.encode()
    )
    response = client.post(
        f"{gateway.url}/v1/models/digits:classify",
        content=body,
        headers={
            **gateway.classifier(),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_multipart" and "has no filename" in error["message"]
