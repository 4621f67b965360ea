"""/docs and /redoc need no internet: every script, stylesheet and icon they reference is a local
path that the gateway serves (the browser test in tests/ui renders /docs with the network cut)."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest

from harness.gateway import Gateway


class _References(HTMLParser):
    """The URLs a page loads (src, href, ReDoc's spec-url), and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("src", "href", "spec-url"):
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_local_assets_that_are_served(
    gateway: Gateway, page: str
) -> None:
    response = httpx.get(gateway.url + page, timeout=10)
    assert response.status_code == 200
    # Whatever a bundle links to elsewhere, the browser may load nothing but the gateway's files.
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:" in policy
    parser = _References()
    parser.feed(response.text)
    inline = "".join(parser.text)
    assert "http://" not in inline and "https://" not in inline, inline
    assert "fonts.googleapis" not in response.text
    assert parser.urls, response.text
    for url in parser.urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        asset = httpx.get(gateway.url + url, timeout=10)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    scripts = [u for u in parser.urls if u.endswith(".js")]
    assert scripts, parser.urls
    bundle = httpx.get(gateway.url + scripts[0], timeout=10)
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    # The page reads our own OpenAPI document (Swagger UI from its script, ReDoc's spec-url).
    assert "/openapi.json" in parser.urls or "'/openapi.json'" in inline


def test_swagger_ui_does_not_call_the_online_validator(gateway: Gateway) -> None:
    assert '"validatorUrl": null' in httpx.get(gateway.url + "/docs", timeout=10).text
