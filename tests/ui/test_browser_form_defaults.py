"""What the Jobs form and the Classify page start with, in a real Chromium against the real stack:
the form's augmentation box at each model's default (the spec it sends trains as the API's would),
and a Classify box that never opens with a model of the other kind (a digit model for photos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fdl.architectures import ARCHITECTURES
from fdl.jobspec import JobSpec
from harness.stack import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CIFAR = sorted(name for name, arch in ARCHITECTURES.items() if arch.dataset == "cifar10")
MNIST = sorted(name for name, arch in ARCHITECTURES.items() if arch.dataset == "mnist")


def posted_spec(page: Any) -> dict[str, Any]:
    """Presses Submit and returns the job spec the form sent (the request is then cut off, so
    that no job is queued), once the form is idle again."""
    with page.expect_request(lambda r: r.method == "POST" and "/v1/jobs" in r.url) as sent:
        page.click("#job-submit")
    page.wait_for_function("() => !document.getElementById('job-submit').disabled")
    body = sent.value.post_data_json
    assert isinstance(body, dict), body
    return body


def test_the_job_form_sends_each_models_augmentation_default(served: Served, page: Any) -> None:
    assert CIFAR and MNIST
    stack = served.stack
    page.route("**/v1/jobs", lambda route: route.abort("connectionrefused"))
    page.goto(f"{stack.url}/ui/#jobs")
    page.evaluate(f"sessionStorage.setItem('fdl.adminKey', {stack.api_key!r})")
    page.reload()
    form = page.locator("#job-form")
    page.click("#job-form summary")
    box = form.locator("input[name=augment]")
    for model in MNIST + CIFAR:
        form.locator("select[name=model]").select_option(model)
        cifar = model in CIFAR
        # Left at the default, the field is left out: the gateway's default applies.
        spec = posted_spec(page)
        assert spec["model"] == model and "augment" not in spec, spec
        assert JobSpec.model_validate(spec).augment is cifar, spec
        assert box.is_checked() == cifar, model
        if cifar:
            box.uncheck()
            spec = posted_spec(page)
            assert spec["augment"] is False, spec
            assert JobSpec.model_validate(spec).augment is False
            assert "flip" in page.inner_text("#augment-hint")
    # Another model puts the box back at that model's default.
    form.locator("select[name=model]").select_option(CIFAR[0])
    box.uncheck()
    form.locator("select[name=model]").select_option(MNIST[0])
    assert not box.is_checked()
    form.locator("select[name=model]").select_option(CIFAR[-1])
    assert box.is_checked()


def test_the_photo_box_never_opens_with_a_digit_model(
    served: Served, page: Any, data_dir: Path, tmp_path: Path
) -> None:
    """The stack serves digit models only: the photo box says so instead of opening with one
    (which called a cat "4")."""
    stack = served.stack
    models = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["models"]
    names = {m["name"] for m in models}
    assert served.model in names and not any(n.startswith("cifar") for n in names), names
    photos = np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz")["x_test"]
    cat = tmp_path / "cat.jpg"  # CIFAR-10's first test image is a cat
    Image.fromarray(photos[0]).resize((96, 96), Image.Resampling.BICUBIC).save(cat, quality=90)

    page.goto(f"{stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    assert page.input_value("#digit-model") in names
    assert page.input_value("#photo-model") == ""
    note = page.locator("#photo-none")
    note.wait_for(state="visible")
    assert "No photo model is served yet" in note.inner_text()
    assert "cifar10_cnn" in note.inner_text()
    assert page.locator("#photo-model-names option").count() == 0
    assert page.locator("#digit-model-names option").count() == len(names)
    assert page.locator("#digit-none").is_hidden()

    page.set_input_files("#photo-input", str(cat))
    error = page.locator("#result-error")
    error.wait_for(state="visible")
    assert "No photo model is served yet" in error.inner_text()
    assert page.locator("#result-body").is_hidden()
    # A model typed in by hand is still asked, whatever its kind.
    page.fill("#photo-model", served.model)
    again = tmp_path / "cat-again.jpg"  # another file: choosing the same one is no change
    again.write_bytes(cat.read_bytes())
    page.set_input_files("#photo-input", str(again))
    page.wait_for_selector("#result-body:not([hidden])")
    assert f"{served.model} · version" in page.inner_text("#result-meta")


# Runs defaultModel on the gateway's listing as the page normalizes it, with a copy of its first
# model that takes 32x32x3 photos (named cifar10_cnn) where asked: the model each box opens with.
CHOOSE = """async ([withPhoto, withDigits]) => {
  const { defaultModel } = await import("/ui/js/classify.js");
  const { listModels, normalizeModel } = await import("/ui/js/catalog.js");
  const digits = await listModels();
  const raw = structuredClone(digits[0].raw);
  raw.name = "cifar10_cnn";
  for (const v of raw.versions) v.metadata = { ...v.metadata, input: { shape: [-1, 32, 32, 3] } };
  const models = [...(withDigits ? digits : []), ...(withPhoto ? [normalizeModel(raw)] : [])];
  const name = (m) => (m ? m.name : null);
  return [name(defaultModel(models, 1, "mnist")), name(defaultModel(models, 3, "cifar"))];
}"""


def test_each_box_opens_with_a_model_of_its_kind_or_none(served: Served, page: Any) -> None:
    page.goto(f"{served.stack.url}/ui/")
    page.wait_for_function("() => document.getElementById('digit-model').value !== ''")
    digit, photo = page.evaluate(CHOOSE, [False, True])
    assert digit is not None and digit != "cifar10_cnn" and photo is None, (digit, photo)
    assert page.evaluate(CHOOSE, [True, False]) == [None, "cifar10_cnn"]
    digit, photo = page.evaluate(CHOOSE, [True, True])
    assert digit is not None and digit != "cifar10_cnn" and photo == "cifar10_cnn"
