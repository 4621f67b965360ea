"""The Models page sends the version it shows as If-Match (If-None-Match: * for a label it shows
none of) with Promote and Roll back: the gateway refuses a label moved elsewhere meanwhile (412),
nothing changes, and the page reads the model again and says where the label is now. A real
Chromium against the real stack; the label is moved by API calls the page does not see."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.stack import RunningStack, Served
from tests.ui.test_browser_models_states import heading_has, labels_of, point

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(autouse=True)
def labels_removed(served: Served, rollback_model: str) -> Iterator[None]:
    """The package's other tests see ui_rollback without these labels."""
    yield
    for label in ("stable", "canary"):
        url = f"{served.stack.url}/v1/models/{rollback_model}/labels/{label}"
        response = httpx.delete(url, headers=served.stack.admin(), timeout=30)
        assert response.status_code in (200, 404), response.text


def open_hidden(page: Any, stack: RunningStack, model: str) -> Any:
    """The Models page once it shows stable → v3, in a tab taken for hidden (it stops polling,
    so a label moved by the API stays as the page showed it); the model's card."""
    point(stack, model, "stable", 3)
    page.goto(f"{stack.url}/ui/#models")
    page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
    page.reload()
    heading_has(page, model, "stable → v3")
    page.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState', { get: () => 'hidden',"
        " configurable: true }); document.dispatchEvent(new Event('visibilitychange')); }"
    )
    return page.locator(f"article[data-model='{model}']")


def answered(page: Any, model: str) -> None:
    """Until the card shows an error or the page a toast (the change was refused, or done)."""
    page.wait_for_function(
        "(model) => document.querySelector(`article[data-model='${model}'] .error`)?.hidden"
        " === false || document.querySelector('.toast') !== null",
        arg=model,
    )


def promote_button(card: Any, version: int) -> Any:
    return card.locator("tbody tr", has_text=f"v{version}").locator("button", has_text="Promote")


def test_promote_refuses_a_label_moved_elsewhere(
    served: Served, rollback_model: str, page: Any
) -> None:
    stack, model = served.stack, rollback_model
    card = open_hidden(page, stack, model)
    point(stack, model, "stable", 2)  # another admin
    promote_button(card, 1).click()
    problem = card.locator(".error")
    answered(page, model)
    assert labels_of(stack, model)["stable"] == 2
    assert "moved to version 2 elsewhere (this page showed version 3)" in problem.inner_text()
    assert "nothing was promoted" in problem.inner_text()
    heading_has(page, model, "stable → v2")  # read again
    promote_button(card, 1).click()  # from what the page shows now: done
    heading_has(page, model, "stable → v1")
    assert labels_of(stack, model)["stable"] == 1

    # A label the page shows none of may only be created: one set elsewhere is left alone.
    card.locator("input[aria-label^='Label to set']").fill("canary")
    point(stack, model, "canary", 2)
    promote_button(card, 3).click()
    page.wait_for_function(
        "(model) => document.querySelector(`article[data-model='${model}'] .error`)"
        "?.textContent.includes('set to version 2 elsewhere (this page showed no such label)')",
        arg=model,
    )
    assert labels_of(stack, model)["canary"] == 2


def test_roll_back_refuses_a_label_moved_after_the_page_read_it(
    served: Served, rollback_model: str, page: Any
) -> None:
    """Moved as the rollback is sent, after anything the page could read: the gateway refuses
    it, where a page that read the label first and sent no precondition rolled back 2 -> 1."""
    stack, model = served.stack, rollback_model
    card = open_hidden(page, stack, model)
    moved: list[str] = []

    def move_first(route: Any) -> None:
        if not moved:
            point(stack, model, "stable", 2)  # another admin, just before the rollback lands
            moved.append(route.request.headers.get("if-match", ""))
        route.continue_()

    page.route("**/labels/stable:rollback", move_first)
    card.locator("button", has_text="Roll back").click()
    problem = card.locator(".error")
    answered(page, model)
    assert labels_of(stack, model)["stable"] == 2  # not rolled back from 2 to 1
    assert moved == ['"3"']
    assert "moved to version 2 elsewhere" in problem.inner_text()
    assert "nothing was rolled back" in problem.inner_text()
    heading_has(page, model, "stable → v2")

    card.locator("button", has_text="Roll back").click()
    heading_has(page, model, "stable → v1")
    page.locator(".toast", has_text="from version 2 to version 1").wait_for()
