"""The web UI in a real headless Chromium against the real stack: draw, upload, train, promote."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fdl.architectures import ARCHITECTURES
from harness.procs import REPO_ROOT
from harness.stack import Served, wait_job

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = REPO_ROOT / "docs" / "img" / "ui-classify.png"
# A seven, in pad fractions: the top bar, then the diagonal stroke.
SEVEN = [(0.30, 0.24), (0.68, 0.24), (0.64, 0.40), (0.52, 0.60), (0.44, 0.80)]


def draw(page: Any, points: list[tuple[float, float]]) -> None:
    box = page.locator("#pad").bounding_box()
    x, y, side = box["x"], box["y"], box["width"]
    page.mouse.move(x + side * points[0][0], y + side * points[0][1])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(x + side * fx, y + side * fy, steps=10)
    page.mouse.up()


def set_key(page: Any, key: str) -> None:
    page.click("#key-button")
    page.fill("#key-input", key)
    page.click("#key-save")
    page.wait_for_selector("#key-button.has-key")


def bright_pixels(page: Any, selector: str) -> int:
    """How many pixels of a loaded <img> are bright (ink), read back through a canvas."""
    return page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector);
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const ctx = canvas.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            let bright = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] > 100) bright += 1;
            return bright;
        }""",
        selector,
    )


def test_draw_a_digit_and_see_the_models_prediction(served: Served, page: Any) -> None:
    stack = served.stack
    page.goto(f"{stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value === 'mnist_logreg'")
    draw(page, SEVEN)
    page.wait_for_selector("#result-body:not([hidden])")
    page.wait_for_function("() => document.getElementById('seen').naturalWidth > 0")
    answer = page.inner_text("#answer")
    assert page.locator("#bars li").count() == 5
    assert f"mnist_logreg · version {served.version}" in page.inner_text("#result-meta")

    # The UI shows exactly what the API answers for the same drawing.
    data_url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    api = httpx.post(
        f"{stack.url}/v1/models/mnist_logreg:classify",
        json={"instances": [{"b64": base64.b64encode(png).decode()}], "top_k": 5},
        timeout=30,
    ).json()["predictions"][0]
    assert answer == api["label"]
    assert page.inner_text("#answer-score") == f"{api['score'] * 100:.1f}%"
    shown = [item.split("\n")[0] for item in page.locator("#bars li").all_inner_texts()]
    assert shown == [entry["label"] for entry in api["top_k"]]
    assert answer == "7", f"a drawn seven was classified as {answer}: {api['top_k']}"

    # The preprocessed image: 28x28, white ink on black, like MNIST.
    seen = page.eval_on_selector("#seen", "(img) => [img.naturalWidth, img.naturalHeight]")
    assert seen == [28, 28]
    ink = bright_pixels(page, "#seen")
    assert 20 < ink < 28 * 28 / 2, f"{ink} bright pixels in the preprocessed digit"

    page.set_viewport_size({"width": 1280, "height": 700})
    page.wait_for_timeout(400)  # let the probability bars finish their CSS transition
    shot = stack.var_dir / "ui-classify.png"
    page.screenshot(path=str(shot))
    if os.environ.get("FDL_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


def test_upload_a_photo(served: Served, page: Any, data_dir: Path, tmp_path: Path) -> None:
    """A CIFAR-10 test photo goes through the photo drop zone, to the MNIST model named by hand
    (the box offers no digit model of itself: tests/ui/test_browser_form_defaults.py)."""
    photos = np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz")["x_test"]
    photo = tmp_path / "ship.jpg"
    Image.fromarray(photos[1]).resize((96, 96), Image.Resampling.BICUBIC).save(photo, quality=90)
    page.goto(f"{served.stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    page.fill("#photo-model", "mnist_logreg")
    page.set_input_files("#photo-input", str(photo))
    page.wait_for_selector("#result-body:not([hidden])")
    assert page.locator("#photo-preview").is_visible()
    assert page.inner_text("#answer") in [str(d) for d in range(10)]
    assert page.locator("#bars li").count() == 5
    page.wait_for_function("() => document.getElementById('seen').naturalWidth === 28")

    # A file that is not an image gets a readable error, not a broken page.
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    page.set_input_files("#photo-input", str(text))
    error = page.locator("#result-error")
    error.wait_for(state="visible")
    assert "image" in error.inner_text().lower()


def test_admin_key_errors_are_readable(served: Served, page: Any) -> None:
    page.goto(f"{served.stack.url}/ui/#jobs")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")  # the jobs need the key: it is asked for at once
    page.fill("#key-input", "not-the-key")
    page.click("#key-save")
    # The gateway refuses it: the dialog comes back saying why, and so does the page.
    problem = page.locator("#key-error")
    problem.wait_for(state="visible")
    assert "API key is not valid" in problem.inner_text()
    page.click("#key-close")
    assert "API key is not valid" in page.inner_text("#jobs-error")
    assert page.evaluate("sessionStorage.getItem('fdl.adminKey')") == "not-the-key"


def open_job_form(page: Any, url: str, api_key: str) -> Any:
    """The Jobs page after entering the admin key in the dialog it opens with."""
    page.goto(f"{url}/ui/#jobs")
    page.locator("#key-dialog").wait_for(state="visible")
    page.fill("#key-input", api_key)
    page.click("#key-save")
    return page.locator("#job-form")


def test_submit_a_job_and_watch_its_curves_grow(served: Served, page: Any) -> None:
    stack = served.stack
    form = open_job_form(page, stack.url, stack.api_key)
    offered = form.locator("select[name=model] option").evaluate_all("els => els.map(e => e.value)")
    assert sorted(offered) == sorted(ARCHITECTURES)  # every architecture, the airnet included
    form.locator("select[name=model]").select_option("mnist_logreg")
    form.locator("input[name=epochs]").fill("3")
    form.locator("select[name=optimizer]").select_option("adam")
    form.locator("input[name=learning_rate]").fill("0.01")
    form.locator("input[name=validation_split]").fill("500")
    page.click("#job-form summary")
    form.locator("input[name=max_train_examples]").fill("3000")
    form.locator("input[name=max_test_examples]").fill("500")
    form.locator("input[name=publish_as]").fill("ui_logreg")
    # Record every change of the loss chart's point count, with the time it happened.
    page.evaluate(
        """() => {
            window.pointLog = [];
            new MutationObserver(() => window.pointLog.push(
                [Number(document.getElementById('chart-loss').dataset.points), Date.now()]
            )).observe(document.getElementById('chart-loss'), {attributes: true});
        }"""
    )
    page.click("#job-submit")
    page.wait_for_selector("#detail-body:not([hidden])")
    job_id = page.inner_text("#detail-id")
    page.wait_for_function(
        "() => document.getElementById('detail-status').textContent === 'succeeded'",
        timeout=240_000,
    )
    log: list[list[float]] = page.evaluate("window.pointLog")
    counts = [int(c) for c, _t in log]
    assert counts[-1] >= 6, counts  # train + validation loss for each of 3 epochs
    assert len(set(counts)) >= 3, f"the curve never grew step by step: {counts}"
    job = wait_job(stack, job_id)
    # Live: the first epoch's points were drawn while the job was still running (the browser
    # and the gateway share this machine's clock).
    first_drawn = next(t for c, t in log if c >= 2) / 1000
    assert first_drawn < job["finished_at"], (first_drawn, job["finished_at"])
    assert page.locator("#epoch-rows tr").count() == 3
    assert "Published ui_logreg version 1" in page.inner_text("#detail-result")
    assert job["status"] == "succeeded" and job["result"]["model"] == "ui_logreg"
    # Fields left empty take the recipe's values: the book's batch size, the chosen optimizer.
    assert job["spec"]["recipe"] == "book" and job["spec"]["batch_size"] == 128
    assert job["spec"]["optimizer"]["name"] == "adam"
    assert job["spec"]["optimizer"]["learning_rate"] == 0.01
    row = page.locator(f"#jobs-rows tr[data-job='{job_id}']")
    row.wait_for()


def test_cancel_a_job_from_the_ui(served: Served, page: Any) -> None:
    stack = served.stack
    form = open_job_form(page, stack.url, stack.api_key)
    form.locator("select[name=model]").select_option("mnist_logreg")
    form.locator("select[name=recipe]").select_option("fast")
    form.locator("input[name=epochs]").fill("200")
    page.click("#job-form summary")
    form.locator("input[name=max_train_examples]").fill("3000")
    form.locator("input[name=publish_as]").fill("ui_cancelled")
    form.locator("input[name=learning_rate]").fill("0.005")  # for the recipe's optimizer
    page.click("#job-submit")
    page.wait_for_selector("#job-cancel:not([hidden])")
    job_id = page.inner_text("#detail-id")
    page.click("#job-cancel")
    page.wait_for_function(
        "() => document.getElementById('detail-status').textContent === 'cancelled'",
        timeout=120_000,
    )
    job = wait_job(stack, job_id, timeout=120)
    assert job["status"] == "cancelled"
    assert job["spec"]["recipe"] == "fast" and job["spec"]["batch_size"] == 256  # the recipe's
    assert job["spec"]["optimizer"]["name"] == "adam"  # the recipe's, with the rate given
    assert job["spec"]["optimizer"]["learning_rate"] == 0.005
    assert page.locator("#job-cancel").is_hidden()


def test_models_page_shows_the_report_and_promotes(served: Served, page: Any) -> None:
    stack = served.stack
    page.goto(f"{stack.url}/ui/#models")
    page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
    page.reload()
    card = page.locator("article[data-model='mnist_logreg']")
    card.wait_for()
    text = card.inner_text()
    accuracy = served_accuracy(stack, served)
    assert f"{accuracy * 100:.2f}%" in text
    assert "AVAILABLE" in text.upper()
    images = card.locator(".report img")
    images.first.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"article[data-model='mnist_logreg'] .report img\")]"
        ".every((img) => img.complete && img.naturalWidth > 100)"
    )
    assert images.count() == 2
    card.locator("button", has_text="Promote").first.click()
    card = page.locator("article[data-model='mnist_logreg']")
    page.wait_for_function(
        "() => document.querySelector(\"article[data-model='mnist_logreg'] h2\").textContent"
        f".includes('stable → v{served.version}')"
    )
    models = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["models"]
    labels = next(m["labels"] for m in models if m["name"] == "mnist_logreg")
    assert labels.get("stable") == served.version
    # Only one version: rolling back says so instead of failing silently.
    card.locator("button", has_text="Roll back").click()
    problem = card.locator(".error")
    problem.wait_for(state="visible")
    assert "No older version" in problem.inner_text()


def served_accuracy(stack: Any, served: Served) -> float:
    job = httpx.get(f"{stack.url}/v1/jobs/{served.job_id}", headers=stack.admin(), timeout=10)
    return job.json()["result"]["metrics"]["test_accuracy"]


def test_ui_files_are_served_safely(served: Served) -> None:
    url = served.stack.url
    index = httpx.get(f"{url}/ui", follow_redirects=True, timeout=10)
    assert index.status_code == 200 and "<title>FDL Serve</title>" in index.text
    head = httpx.head(f"{url}/ui/", timeout=10)  # link checkers and `curl -I` probe with HEAD
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert httpx.head(f"{url}/ui/js/main.js", timeout=10).status_code == 200
    assert "default-src 'self'" in index.headers["content-security-policy"]
    module = httpx.get(f"{url}/ui/js/main.js", timeout=10)
    assert module.headers["content-type"].startswith("text/javascript")
    for sneaky in ("/ui/..%2f..%2fpyproject.toml", "/ui/js/../../routers/ui.py", "/ui/.hidden"):
        assert httpx.get(url + sneaky, timeout=10).status_code == 404, sneaky
    report = f"{url}/v1/models/mnist_logreg/versions/{served.version}/report"
    assert httpx.get(f"{report}/evaluation.json", timeout=10).json()["test_examples"] == 1000
    assert httpx.get(f"{report}/..%2Fsaved_model.pb", timeout=10).status_code in (404, 422)
    assert httpx.get(f"{report}/saved_model.pb", timeout=10).status_code == 422
    preview = httpx.post(
        f"{url}/v1/models/mnist_logreg:preprocess",
        files=[("file", ("x.png", _png(np.full((50, 40), 255, np.uint8)), "image/png"))],
        timeout=10,
    )
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(preview.content)).size == (28, 28)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
