"""One real stack (`fdl up`) with a tiny trained MNIST model, shared by the browser and CLI tests.

Browser tests drive Debian's Chromium with Playwright (`scripts/install-browser.sh` installs it;
Playwright's own browser downloads are never used); they skip, saying why, only where no Chromium
is installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.mnist import mnist_test_digits, png_bytes
from harness.stack import (
    RunningStack,
    Served,
    fdl_up,
    stack_env,
    submit_job,
    wait_job,
    wait_served,
)

# Tiny on purpose: seconds of training on 2 cores, still clearly better than chance.
TINY_JOB = {
    "model": "mnist_logreg",
    "epochs": 1,
    "max_train_examples": 3000,
    "max_test_examples": 1000,
    "validation_split": 500,
    "optimizer": {"name": "adam", "learning_rate": 0.01},
}
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="package")
def ui_stack(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, logs_dir: Path
) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("ui-stack")
    # Started in the folder that holds var/, as `make run` is in a checkout: job results show
    # paths such as var/tensorboard/<id> relative to it.
    env = stack_env(tmp, data_dir)
    with fdl_up("fdl-up-ui", env, logs_dir, tmp / "models", tmp / "var", cwd=tmp) as up:
        yield up


@pytest.fixture(scope="package")
def served(ui_stack: RunningStack) -> Served:
    """mnist_logreg version 1, trained by a real job and served by the model server."""
    job = wait_job(ui_stack, submit_job(ui_stack, TINY_JOB))
    assert job["status"] == "succeeded", job
    assert job["result"]["published"], job["result"]
    version = job["result"]["version"]
    wait_served(ui_stack, "mnist_logreg", version)
    return Served(ui_stack, "mnist_logreg", version, job["id"])


def train_all(stack: RunningStack, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit every job at once (the worker runs them in order) and wait for each to publish."""
    ids = [submit_job(stack, job) for job in jobs]
    finished = [wait_job(stack, job_id) for job_id in ids]
    for job in finished:
        assert job["status"] == "succeeded" and job["result"]["published"], job
    return finished


@pytest.fixture(scope="package")
def rollback_model(served: Served) -> str:
    """ui_rollback versions 1, 2 and 3 (and a_capped, a poor model named to sort first)."""
    stack = served.stack
    capped = {**TINY_JOB, "max_train_examples": 100, "publish_as": "a_capped"}
    capped["optimizer"] = {"name": "sgd", "learning_rate": 0.0001}
    train_all(stack, [{**TINY_JOB, "publish_as": "ui_rollback"}] * 3 + [capped])
    wait_served(stack, "ui_rollback", 3)
    wait_served(stack, "a_capped", 1)
    return "ui_rollback"


@pytest.fixture(scope="package")
def digits(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[Path], np.ndarray]:
    """Twenty real MNIST test digits as PNG files, with their labels."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = mnist_test_digits(data_dir, 20)
    paths = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = folder / f"digit{index:02d}_{label}.png"
        path.write_bytes(png_bytes(image))
        paths.append(path)
    return paths, labels


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium installed: run scripts/install-browser.sh (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
