"""The Classify page when things go wrong, in a real Chromium against the real stack: a model list
that cannot be fetched (unreachable, 5xx, no answer) is named as such and asked for again until
it comes, never taken for "no model is served"; a failed photo leaves no other image's answer
beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.stack import Served
from tests.ui.test_browser import SEVEN, draw

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIST = "**/v1/models"  # the list only: the glob does not match /v1/models/<name>
GATEWAY_DOWN = json.dumps({"error": {"code": "unavailable", "message": "The gateway is starting."}})


def test_a_list_that_fails_says_why_and_is_asked_for_until_it_loads(
    served: Served, page: Any
) -> None:
    tries: list[str] = []

    def unreachable(route: Any) -> None:
        tries.append("abort")
        route.abort("connectionrefused")

    page.route(LIST, unreachable)
    page.goto(f"{served.stack.url}/ui/")
    for source in ("digit", "photo"):
        note = page.locator(f"#{source}-none")
        note.wait_for(state="visible")
        text = note.inner_text()
        assert "could not be loaded" in text and "cannot be reached" in text, text
        assert "No " not in text, text
    # Drawing says the same, never that no digit model is served.
    draw(page, SEVEN)
    error = page.locator("#result-error")
    error.wait_for(state="visible")
    assert "cannot be reached" in error.inner_text(), error.inner_text()
    assert "No digit model" not in error.inner_text()

    # A gateway answering 503 meanwhile: the next try says so (it is asked again by itself).
    page.unroute(LIST, unreachable)
    page.route(
        LIST,
        lambda route: route.fulfill(status=503, content_type="application/json", body=GATEWAY_DOWN),
    )
    page.wait_for_function(
        "() => document.getElementById('digit-none').textContent.includes('is starting')"
    )
    assert len(tries) >= 2, tries

    # Once the list comes, the model is chosen and the notes go, with no reload.
    page.unroute(LIST)
    page.wait_for_function(
        "() => document.getElementById('digit-model').value !== ''",
        timeout=60_000,
    )
    page.locator("#digit-none").wait_for(state="hidden")
    assert page.locator("#result-error").is_hidden()
    # Only now, from a list that was fetched, does the photo box say none is served.
    assert "No photo model is served yet" in page.inner_text("#photo-none")
    # And it goes once a model is typed in by hand.
    page.fill("#photo-model", served.model)
    page.locator("#photo-none").wait_for(state="hidden")
    # The package's other tests may have served a digit model that the page prefers.
    page.fill("#digit-model", served.model)
    draw(page, SEVEN)
    page.wait_for_selector("#result-body:not([hidden])")
    assert f"{served.model} · version" in page.inner_text("#result-meta")


def test_a_list_request_with_no_answer_times_out_and_is_asked_again(
    served: Served, page: Any
) -> None:
    """A gateway that never answers: the request gives up after FDL_REQUEST_TIMEOUT_MS (1 s
    here, 30 s by default) and says so, instead of waiting for ever."""
    hung: list[Any] = []
    page.add_init_script("window.FDL_REQUEST_TIMEOUT_MS = 1000;")
    page.route(LIST, lambda route: hung.append(route))  # never answered
    page.goto(f"{served.stack.url}/ui/")
    page.wait_for_function(
        "() => document.getElementById('digit-none').textContent"
        ".includes('did not answer within 1 s')",
        timeout=10_000,
    )
    assert "No " not in page.inner_text("#digit-none")
    page.unroute(LIST)
    page.wait_for_function(
        "() => document.getElementById('digit-model').value !== ''",
        timeout=60_000,
    )
    page.locator("#digit-none").wait_for(state="hidden")
    assert hung


def test_a_failed_photo_hides_the_previous_answer(
    served: Served, page: Any, digits: tuple[list[Path], Any], tmp_path: Path
) -> None:
    paths, _ = digits
    page.goto(f"{served.stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    page.fill("#photo-model", served.model)
    page.set_input_files("#photo-input", str(paths[0]))
    page.wait_for_selector("#result-body:not([hidden])")
    page.wait_for_function("() => document.getElementById('seen').naturalWidth === 28")
    assert "version" in page.inner_text("#result-meta")

    # A file the gateway refuses (not an image in any format it reads).
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    page.set_input_files("#photo-input", str(broken))
    error = page.locator("#result-error")
    error.wait_for(state="visible")
    page.wait_for_function("() => !document.getElementById('result').hasAttribute('aria-busy')")
    assert page.locator("#result-body").is_hidden()
    assert page.locator("#seen").is_hidden()
    assert page.inner_text("#result-meta") == ""
    preview = page.get_attribute("#photo-preview", "alt") or ""
    assert "broken.png" in preview

    # The next good photo shows its answer again.
    page.set_input_files("#photo-input", str(paths[1]))
    page.wait_for_selector("#result-body:not([hidden])")
    assert error.is_hidden()
    assert "version" in page.inner_text("#result-meta")
