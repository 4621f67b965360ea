"""What a new user meets in the first hour, in a real Chromium against the real stack: the API
docs offline, the key dialog that carries on with the promote it interrupted, rolling back after
promoting the newest version, retired versions, and the model Classify opens with."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from harness.gateway import classify, set_label
from harness.procs import wait_for
from harness.stack import RunningStack, Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def offline(page: Any) -> list[str]:
    """Cut the page off from everything but the gateway; returns the requests that tried."""
    blocked: list[str] = []

    def route(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return blocked


def test_api_docs_render_offline(ui_stack: RunningStack, page: Any) -> None:
    blocked = offline(page)
    page.goto(f"{ui_stack.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "FDL Serve" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/jobs']")
    page.goto(f"{ui_stack.url}/redoc")
    page.wait_for_selector("redoc h1")
    assert "FDL Serve" in page.inner_text("redoc h1")
    page.wait_for_function("() => document.body.innerText.includes('Point a label (stable')")
    assert blocked == [], f"the docs tried to reach the internet: {blocked}"


def model_labels(stack: RunningStack, model: str) -> dict[str, int]:
    return httpx.get(f"{stack.url}/v1/models/{model}", timeout=10).json()["labels"]


def card_heading_has(page: Any, model: str, text: str) -> None:
    page.wait_for_function(
        "([model, text]) => document.querySelector(`article[data-model='${model}'] h2`)"
        "?.textContent.includes(text)",
        arg=[model, text],
    )


def test_saving_the_key_carries_on_with_the_promote(served: Served, page: Any) -> None:
    stack = served.stack
    page.goto(f"{stack.url}/ui/#models")  # no key in this tab yet
    card = page.locator(f"article[data-model='{served.model}']")
    card.wait_for()
    card.locator("input[aria-label^='Label to set']").fill("keyretry")
    card.locator("button", has_text="Promote").first.click()
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    page.fill("#key-input", stack.api_key)
    page.click("#key-save")
    # No second click: the promote the dialog interrupted goes through with the saved key.
    card_heading_has(page, served.model, f"keyretry → v{served.version}")
    assert model_labels(stack, served.model)["keyretry"] == served.version
    removed = httpx.delete(
        f"{stack.url}/v1/models/{served.model}/labels/keyretry", headers=stack.admin(), timeout=30
    )
    assert removed.status_code == 200, removed.text


def version_state(stack: RunningStack, model: str, version: int) -> str:
    versions = httpx.get(f"{stack.url}/v1/models/{model}", timeout=10).json()["versions"]
    return next(v["state"] for v in versions if v["version"] == version)


def test_roll_back_after_promoting_the_newest_version(
    served: Served, rollback_model: str, page: Any
) -> None:
    """stable → v2, promote v3, Roll back: stable → v2 again, although v2 was retired (the
    model server serves labelled versions and the newest only)."""
    stack, model = served.stack, rollback_model
    response = set_label(stack, model, "stable", {"version": 2})
    assert response.status_code == 200, response.text
    page.goto(f"{stack.url}/ui/#models")
    page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
    page.reload()
    card = page.locator(f"article[data-model='{model}']")
    card_heading_has(page, model, "stable → v2")
    card.locator("tbody tr", has_text="v3").locator("button", has_text="Promote").click()
    card_heading_has(page, model, "stable → v3")
    assert model_labels(stack, model)["stable"] == 3

    # v2 is retired now: shown in grey as "retired", not as an error.
    wait_for(lambda: version_state(stack, model, 2) in ("END", "NOT_LOADED"), 60, "v2 retired")
    retired = classify(f"{stack.url}/v1/models/{model}/versions/2:classify", timeout=10)
    assert retired.status_code == 404, retired.text  # as docs/ui.md says
    page.click("#models-refresh")
    badge = card.locator("tbody tr", has_text="v2").locator(".badge.retired")
    badge.wait_for()
    assert badge.inner_text().lower() == "retired"
    assert card.locator(".badge.end").count() == 0

    card.locator("button", has_text="Roll back").click()
    card_heading_has(page, model, "stable → v2")
    assert model_labels(stack, model)["stable"] == 2
    assert card.locator(".error:visible").count() == 0


def test_classify_opens_with_the_stable_model(
    served: Served, rollback_model: str, page: Any
) -> None:
    """Not the alphabetically first model (a_capped, poor and unlabelled): a labelled one."""
    stack = served.stack
    response = set_label(stack, rollback_model, "stable", {"version": 3})
    assert response.status_code == 200, response.text
    models = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["models"]
    assert min(m["name"] for m in models) == "a_capped"
    stable = {m["name"] for m in models if "stable" in m["labels"]}
    assert rollback_model in stable
    page.goto(f"{stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    chosen = page.input_value("#digit-model")
    assert chosen in stable, (chosen, stable)
    page.wait_for_function("() => document.getElementById('digit-version').value === 'l:stable'")


def test_a_one_epoch_job_has_its_values_written_on_the_chart(served: Served, page: Any) -> None:
    stack = served.stack
    page.goto(f"{stack.url}/ui/#jobs")
    page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
    page.reload()
    page.locator(f"#jobs-rows tr[data-job='{served.job_id}']").click()
    page.wait_for_function(
        "() => document.getElementById('detail-status').textContent === 'succeeded'"
    )
    # One epoch: validation loss and accuracy are single points, so the charts say their values.
    for chart in ("chart-loss", "chart-acc"):
        page.wait_for_function(
            "(id) => Number(document.getElementById(id).dataset.labelled) >= 1", arg=chart
        )
