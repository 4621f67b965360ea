"""The Models page's report images on a gateway whose classification routes need a key
(``FDL_CLASSIFY_OPEN=false``): the report routes then do too, and an ``<img src>`` cannot send
the ``Authorization`` header, so both images answered 401 and showed broken while
``evaluation.json`` (fetched with the key) loaded. The page now fetches them with the key, once
they come near the viewport (as ``loading="lazy"`` did: a page of many models spent three requests
of the key's rate limit per card), and revokes the object URLs of every report it draws over,
late answers included (two quick refreshes left four URLs alive for two images shown).

A second gateway, with ``FDL_CLASSIFY_OPEN=false``, on the UI stack's Redis, model server and
model repository."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from fdl.stack import REDIS_URL_FILE
from harness.gateway import ADMIN_KEY, Gateway, start_gateway
from harness.stack import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGES = "[...document.querySelectorAll(\"article[data-model='mnist_logreg'] .report img\")]"
# Counts the page's object URLs still alive, and its fetches whose body is not read yet.
HOOKS = """
window.liveUrls = new Set();
window.unread = 0;
const create = URL.createObjectURL.bind(URL), revoke = URL.revokeObjectURL.bind(URL);
URL.createObjectURL = (blob) => { const url = create(blob); liveUrls.add(url); return url; };
URL.revokeObjectURL = (url) => { liveUrls.delete(url); revoke(url); };
const done = () => setTimeout(() => { window.unread -= 1; });
const originalFetch = window.fetch;
window.fetch = (...args) => {
  window.unread += 1;
  const answer = originalFetch(...args);
  answer.then((response) => response.clone().arrayBuffer()).then(done, done);
  return answer;
};
"""


def closed_gateway(served: Served, logs_dir: Path, secrets: Path, model_dir: Path) -> Gateway:
    stack = served.stack
    return start_gateway(
        "gateway-classify-closed",
        logs_dir,
        (stack.var_dir / REDIS_URL_FILE).read_text().strip(),
        int(stack.env["FDL_SERVING_GRPC_PORT"]),
        model_dir,
        secrets,
        FDL_CLASSIFY_OPEN="false",
    )


def open_models(page: Any, url: str, model: str = "mnist_logreg") -> None:
    """The Models page, the admin key entered in the dialog its refused listing opens, scrolled
    to ``model``'s card."""
    page.goto(f"{url}/ui/#models")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-save")
    page.wait_for_selector("#key-button.has-key")
    page.click("#models-refresh")
    page.locator(f"article[data-model='{model}']").scroll_into_view_if_needed()


@pytest.fixture
def closed(served: Served, logs_dir: Path, tmp_path: Path) -> Iterator[Gateway]:
    with closing(closed_gateway(served, logs_dir, tmp_path / "keys", served.stack.model_dir)) as gw:
        yield gw


def test_report_images_load_with_the_key_when_classification_needs_one(
    served: Served, page: Any, closed: Gateway
) -> None:
    url = closed.url
    report = f"{url}/v1/models/mnist_logreg/versions/{served.version}/report/confusion_matrix.png"
    assert httpx.get(report, timeout=10).status_code == 401  # the route does need the key
    open_models(page, url)
    card = page.locator("article[data-model='mnist_logreg']")
    card.locator(".report").wait_for()
    page.wait_for_function(
        f"() => {IMAGES}.length === 2"
        f" && {IMAGES}.every((img) => img.complete && img.naturalWidth > 100)"
    )
    sources = page.evaluate(f"() => {IMAGES}.map((img) => img.src)")
    assert all(src.startswith("blob:") for src in sources), sources

    # Another report replaces them: the previous object URLs are revoked.
    card.locator("button", has_text="Report").first.click()
    page.wait_for_function(
        f"(old) => {IMAGES}.length === 2 && {IMAGES}.every((img) => img.naturalWidth > 100"
        " && !old.includes(img.src))",
        arg=sources,
    )
    revoked = page.evaluate(
        """async (urls) => Promise.all(urls.map((url) =>
            fetch(url).then(() => false, () => true)))""",
        sources,
    )
    assert revoked == [True, True]


def test_a_report_image_that_cannot_be_fetched_says_why(
    served: Served, page: Any, logs_dir: Path, tmp_path: Path
) -> None:
    # A copy of the model repository whose newest mnist_logreg report lost its training curves.
    models = tmp_path / "models"
    shutil.copytree(served.stack.model_dir, models)
    (
        models / "mnist_logreg" / str(served.version) / "assets.extra" / "training_curves.png"
    ).unlink()
    with closing(closed_gateway(served, logs_dir, tmp_path / "keys", models)) as gateway:
        open_models(page, gateway.url)
        figures = page.locator("article[data-model='mnist_logreg'] .report figure")
        figures.nth(1).locator("text=Could not load the training curves").wait_for()
        assert figures.nth(1).locator("img").count() == 0  # a message, no broken image
        page.wait_for_function(f"() => {IMAGES}.length === 1 && {IMAGES}[0].naturalWidth > 100")


def test_reports_drawn_over_keep_no_object_url(served: Served, page: Any) -> None:
    page.add_init_script(HOOKS)
    page.goto(f"{served.stack.url}/ui/#models")
    page.wait_for_function(f"() => {IMAGES}.length === 2 && {IMAGES}.every((img) => img.src)")
    for _ in range(2):
        # Two refreshes at once: the first list's reports are drawn over while their
        # evaluation.json and images are still being fetched.
        page.evaluate(
            "() => { const b = document.getElementById('models-refresh'); b.click(); b.click(); }"
        )
        page.wait_for_function(
            f"() => window.unread === 0 && {IMAGES}.length === 2"
            f" && {IMAGES}.every((img) => img.src.startsWith('blob:'))"
        )
        shown = set(page.evaluate("() => [...document.querySelectorAll('img')].map((i) => i.src)"))
        alive = set(page.evaluate("() => [...window.liveUrls]"))
        assert alive <= shown, f"{len(alive - shown)} object URLs alive for no image shown"


def loaded(model: str) -> str:
    """A page expression: how many of ``model``'s report images are drawn."""
    images = f"document.querySelectorAll(\"article[data-model='{model}'] .report img\")"
    return f"[...{images}].filter((img) => img.naturalWidth > 100).length"


def test_report_images_are_fetched_once_near_the_viewport(
    served: Served, page: Any, logs_dir: Path, tmp_path: Path
) -> None:
    # A repository of many copies of the model, every card with its report.
    models = tmp_path / "models"
    names = [f"zz_copy_{index:02d}" for index in range(12)]
    for name in names:
        shutil.copytree(served.stack.model_dir / "mnist_logreg", models / name)
    images: list[str] = []
    page.on("request", lambda r: images.append(r.url) if r.url.endswith(".png") else None)
    with closing(closed_gateway(served, logs_dir, tmp_path / "keys", models)) as gateway:
        open_models(page, gateway.url, names[0])
        page.wait_for_function(
            "(n) => document.querySelectorAll('#models-list .result-line').length === n",
            arg=len(names),
        )
        page.wait_for_function(f"() => {loaded(names[0])} === 2")
        # Only the cards near the viewport asked for theirs: not the last one's, far below.
        last = f"/models/{names[-1]}/"
        assert 2 <= len(images) < 2 * len(names), images
        assert not [url for url in images if last in url]
        page.locator(f"article[data-model='{names[-1]}']").scroll_into_view_if_needed()
        page.wait_for_function(f"() => {loaded(names[-1])} === 2")
        assert len([url for url in images if last in url]) == 2
