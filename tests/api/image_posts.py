"""Sending image files to the digits model of the gateway's test stack, and encoding them with
Pillow: shared by the image tests (tests/api/test_image_variants.py, test_image_structure.py)."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from harness.gateway import Gateway, post

CLASSIFY = "/v1/models/digits:classify"


def classify(gateway: Gateway, *images: bytes) -> httpx.Response:
    files = [
        ("file", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)
    ]
    return post(gateway, CLASSIFY, files=files)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()
