"""The Models page keeps its state and its view current, in a real Chromium against the real
stack: a refresh keeps the label typed, the report chosen and the focus (a Promote put the label
back to "stable", so the next Roll back rolled back stable); the page refreshes when shown again,
focused or polled (a label moved in another tab stayed stale); Roll back refuses to roll back
from a version the page did not show; saving the key carries on with a Roll back; a card fits a
360 px screen with a model name of 64 characters."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from fdl.stack import REDIS_URL_FILE
from harness.gateway import set_label, start_gateway
from harness.stack import RunningStack, Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Shorter than the page's 10 s poll: what shows within it came from the event, not the poll.
QUICK_MS = 5_000
LONG_NAME = ("a_model_named_at_the_maximum_length_" + "x" * 64)[:64]


def point(stack: RunningStack, model: str, label: str, version: int) -> None:
    response = set_label(stack, model, label, {"version": version})
    assert response.status_code == 200, response.text


def labels_of(stack: RunningStack, model: str) -> dict[str, int]:
    return httpx.get(f"{stack.url}/v1/models/{model}", timeout=10).json()["labels"]


def remove_label(stack: RunningStack, model: str, label: str) -> None:
    url = f"{stack.url}/v1/models/{model}/labels/{label}"
    response = httpx.delete(url, headers=stack.admin(), timeout=30)
    assert response.status_code in (200, 404), response.text


@pytest.fixture(autouse=True)
def labels_removed(served: Served, rollback_model: str) -> Iterator[None]:
    """The labels these tests set on ui_rollback go after each: the package's other tests see
    the stack as they would alone (the Classify page opens with a digit model that has a stable
    label, else the most accurate: mnist_logreg, not ui_rollback)."""
    yield
    for label in ("stable", "canary"):
        remove_label(served.stack, rollback_model, label)


def open_models(page: Any, stack: RunningStack, model: str, key: bool = True) -> Any:
    """The Models page once it shows ``model``'s stable label at version 3; its card."""
    point(stack, model, "stable", 3)
    page.goto(f"{stack.url}/ui/#models")
    if key:
        page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
        page.reload()
    heading_has(page, model, "stable → v3")
    return page.locator(f"article[data-model='{model}']")


def heading_has(page: Any, model: str, text: str, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "([model, text]) => document.querySelector(`article[data-model='${model}'] h2`)"
        "?.textContent.includes(text)",
        arg=[model, text],
        timeout=timeout,
    )


def row(page: Any, model: str, version: int) -> Any:
    return page.locator(f"article[data-model='{model}'] tbody tr", has_text=f"v{version}")


def test_a_refresh_keeps_the_label_typed_the_report_chosen_and_the_focus(
    served: Served, rollback_model: str, page: Any
) -> None:
    stack, model = served.stack, rollback_model
    remove_label(stack, model, "canary")
    card = open_models(page, stack, model)
    card.locator("input[aria-label^='Label to set']").fill("canary")
    row(page, model, 1).locator("button", has_text="Report").click()
    card.locator(".result-line", has_text="Version 1:").wait_for()

    row(page, model, 2).locator("button", has_text="Promote").click()
    heading_has(page, model, "canary → v2")
    assert card.locator("input[aria-label^='Label to set']").input_value() == "canary"
    focused = page.evaluate(
        "() => [document.activeElement.textContent,"
        " document.activeElement.closest('tr')?.querySelector('strong')?.textContent]"
    )
    assert focused == ["Promote", "v2"], focused
    assert card.locator(".result-line").inner_text().startswith("Version 1:")

    # The label typed is still the one rolled back: canary, not stable.
    card.locator("button", has_text="Roll back").click()
    heading_has(page, model, "canary → v1")
    assert labels_of(stack, model)["stable"] == 3
    assert labels_of(stack, model)["canary"] == 1
    remove_label(stack, model, "canary")


def test_the_page_refreshes_when_shown_again_focused_or_polled(
    served: Served, rollback_model: str, page: Any
) -> None:
    stack, model = served.stack, rollback_model
    page.clock.install()
    open_models(page, stack, model)

    point(stack, model, "stable", 2)  # another tab
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    heading_has(page, model, "stable → v2", QUICK_MS)

    point(stack, model, "stable", 3)
    page.evaluate("() => window.dispatchEvent(new Event('focus'))")
    heading_has(page, model, "stable → v3", QUICK_MS)

    point(stack, model, "stable", 2)
    page.clock.run_for(10_000)
    heading_has(page, model, "stable → v2", QUICK_MS)
    point(stack, model, "stable", 3)


def test_roll_back_refuses_a_label_moved_elsewhere(
    served: Served, rollback_model: str, page: Any
) -> None:
    stack, model = served.stack, rollback_model
    card = open_models(page, stack, model)
    # A hidden tab does not poll: the page keeps showing stable → v3.
    page.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState', { get: () => 'hidden',"
        " configurable: true }); document.dispatchEvent(new Event('visibilitychange')); }"
    )
    point(stack, model, "stable", 2)  # another tab
    card.locator("button", has_text="Roll back").click()
    problem = card.locator(".error")
    problem.wait_for(state="visible")
    assert "moved to version 2 elsewhere" in problem.inner_text()
    assert labels_of(stack, model)["stable"] == 2  # nothing rolled back
    heading_has(page, model, "stable → v2")

    card.locator("button", has_text="Roll back").click()
    heading_has(page, model, "stable → v1")
    assert labels_of(stack, model)["stable"] == 1
    page.locator(".toast", has_text="from version 2 to version 1").wait_for()
    point(stack, model, "stable", 3)


def test_saving_the_key_carries_on_with_the_roll_back(
    served: Served, rollback_model: str, page: Any
) -> None:
    stack, model = served.stack, rollback_model
    card = open_models(page, stack, model, key=False)
    card.locator("button", has_text="Roll back").click()
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", stack.api_key)
    page.click("#key-save")
    # No second click: the rollback the dialog interrupted goes through with the saved key.
    heading_has(page, model, "stable → v2")
    assert labels_of(stack, model)["stable"] == 2
    point(stack, model, "stable", 3)


def test_a_card_fits_a_narrow_screen(
    served: Served, browser: Any, logs_dir: Path, tmp_path: Path
) -> None:
    """A gateway of its own whose repository holds a copy of the model, named at the maximum
    length: the UI stack's repository keeps the models the other tests expect."""
    stack = served.stack
    models = tmp_path / "models"
    shutil.copytree(stack.model_dir / served.model, models / LONG_NAME)
    gateway = start_gateway(
        "gateway-long-name",
        logs_dir,
        (stack.var_dir / REDIS_URL_FILE).read_text().strip(),
        int(stack.env["FDL_SERVING_GRPC_PORT"]),
        models,
        tmp_path / "keys",
        FDL_CLASSIFY_OPEN="true",
    )
    context = browser.new_context(viewport={"width": 360, "height": 740})
    with closing(gateway), closing(context):
        page = context.new_page()
        page.goto(f"{gateway.url}/ui/#models")
        card = page.locator(f"article[data-model='{LONG_NAME}']")
        card.wait_for()
        card.locator(".report img").first.scroll_into_view_if_needed()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.report img')]"
            ".filter((img) => img.naturalWidth > 100).length === 2"
        )
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"the page is {width} px wide on a 360 px screen"
        right = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('.model-card h2, .report img')]"
            ".map((node) => node.getBoundingClientRect().right))"
        )
        assert right <= 360, right
