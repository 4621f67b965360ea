"""The static mounts (`/ui/…`, `/docs-assets/…`) always send the whole file: a `Range` header is
ignored, whatever it says.

Starlette's `FileResponse` answered odd ranges with `text/plain` 400 or 416 instead of the
gateway's JSON errors (`items=0-1`: "Only support bytes range", where RFC 9110 says an unknown
range unit must be ignored; `bytes=5-2`: 400; `bytes=99999-`: 416). The files are small: each
Range gets the full 200, with no `Accept-Ranges`, and the caching (no-cache, ETag, 304) and
security headers stay. So do the report route's images
(`/v1/models/{model}/versions/{v}/report/{name}.png`). A real gateway process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from harness.gateway import CLASSIFY_KEY, Gateway, bearer

RANGES = [
    "items=0-1",  # an unknown unit: ignored (RFC 9110 14.2)
    "bytes=5-2",  # backwards
    "bytes=99999999-",  # past the end
    "bytes=0-1",  # a good one: still the whole file
    "bytes=0-0,2-3,5-9",  # several
    "bytes=",
    "nonsense",
]
FILES = ["/ui/index.html", "/ui/", "/ui/js/api.js", "/docs-assets/swagger-ui.css"]

REPORT_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))  # served as it is: only its name is checked


@pytest.fixture
def static_gateway(
    redis_url: str, lone_gateway: Callable[..., AbstractContextManager[Gateway]], tmp_path: Path
) -> Iterator[Gateway]:
    """No model server: static files need none. Its repository (lone_gateway's, under
    ``tmp_path``) has one report image."""
    report = tmp_path / "models" / "digits" / "1" / "assets.extra" / "curves.png"
    report.parent.mkdir(parents=True)
    report.write_bytes(REPORT_PNG)
    with lone_gateway("gateway-static-ranges", redis_url) as gateway:
        yield gateway


def test_any_range_gets_the_whole_file(static_gateway: Gateway) -> None:
    with httpx.Client(base_url=static_gateway.url, timeout=10) as client:
        for path in FILES:
            _whole_whatever_the_range(client, path)


def _whole_whatever_the_range(client: httpx.Client, path: str) -> None:
    whole = client.get(path)
    assert whole.status_code == 200, whole.text
    etag = whole.headers["etag"]
    for value in RANGES:
        for extra in ({}, {"If-Range": etag}):
            got = client.get(path, headers={"Range": value, **extra})
            assert got.status_code == 200, (value, got.status_code, got.text[:200])
            assert got.content == whole.content, value
            assert "content-range" not in got.headers and "accept-ranges" not in got.headers
            for header in ("content-type", "cache-control", "etag", "x-content-type-options"):
                assert got.headers.get(header) == whole.headers.get(header), (value, header)
        head = client.head(path, headers={"Range": value})
        assert head.status_code == 200 and head.content == b"", value
        assert head.headers["content-length"] == str(len(whole.content))
        # Revalidation is unchanged: the ETag still gets 304.
        cached = client.get(path, headers={"Range": value, "If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b"", value
    assert "accept-ranges" not in whole.headers  # ranges are not offered


def test_ui_headers_stay(static_gateway: Gateway) -> None:
    page = httpx.get(
        f"{static_gateway.url}/ui/index.html", headers={"Range": "items=0-1"}, timeout=10
    )
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(
        f"{static_gateway.url}/ui/js/api.js", headers={"Range": "bytes=5-2"}, timeout=10
    )
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    missing = httpx.get(
        f"{static_gateway.url}/ui/nothing.js", headers={"Range": "bytes=0-1"}, timeout=10
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_report_image_is_sent_whole(static_gateway: Gateway) -> None:
    """The report route serves a file too (not a static mount): the same rule."""
    url = f"{static_gateway.url}/v1/models/digits/versions/1/report/curves.png"
    for value in RANGES:
        got = httpx.get(url, headers={**bearer(CLASSIFY_KEY), "Range": value}, timeout=10)
        assert got.status_code == 200, (value, got.status_code, got.text[:200])
        assert got.content == REPORT_PNG and got.headers["content-type"] == "image/png"
        assert "content-range" not in got.headers and "accept-ranges" not in got.headers
