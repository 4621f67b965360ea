"""The job form submits once: each submission carries an ``Idempotency-Key``, kept while its
outcome is unknown or it may be tried again, so pressing Submit again after a lost answer gets
the job the first try created (``Idempotent-Replayed: true``) instead of a second one.

Before, the form sent no key: a user whose browser lost the answer (a network blip, a gateway
restart) and pressed Submit again started a second training job. The browser reaches the UI
stack's gateway through :class:`tests.cli.lost_answer_proxy.LostAnswerProxy`, which loses the
answers to ``POST /v1/jobs`` (after the gateway has queued the job) while ``lose`` is set; the
jobs are real, trained by the stack's worker (never published: ``min_accuracy`` 1), and
cancelled and removed at the end. Each test's jobs are told apart by a seed of their own.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStore
from fdl.stack import REDIS_URL_FILE
from harness.procs import wait_for
from harness.stack import RunningStack, Served
from tests.cli.lost_answer_proxy import LostAnswerProxy
from tests.ui.test_browser import open_job_form

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STATUS = "#job-form-status"
ERROR = "#job-form-error"


@pytest.fixture
def seed(served: Served) -> Iterator[int]:
    """A seed no other job has; the jobs submitted with it are removed at the end."""
    value = random.randrange(10**6, 2**31 - 1)
    yield value
    remove_jobs(served.stack, value)


def remove_jobs(stack: RunningStack, seed: int) -> None:
    """Cancel the jobs with ``seed`` and, once ended, remove their records as the retention
    reaper does: the other tests expect the stack's first jobs on the list's first page."""
    jobs = jobs_with(stack, seed)
    with httpx.Client(base_url=stack.url, headers=stack.admin(), timeout=10) as api:
        for job in jobs:
            if job["status"] in ("queued", "running"):
                api.delete(f"/v1/jobs/{job['id']}")
    ended = {"succeeded", "failed", "cancelled"}
    wait_for(
        lambda: all(job["status"] in ended for job in jobs_with(stack, seed)),
        60,
        "the test's jobs to end",
    )
    store = JobStore.from_url((stack.var_dir / REDIS_URL_FILE).read_text().strip())
    with closing(store.redis):
        for job in jobs:
            store.redis.delete(JOB_KEY.format(job["id"]), EVENTS_KEY.format(job["id"]))
            store.redis.zrem(INDEX_KEY, job["id"])


@pytest.fixture
def proxy(served: Served) -> Iterator[LostAnswerProxy]:
    proxy = LostAnswerProxy(served.stack.url, lose_all=True)
    yield proxy
    proxy.close()


def jobs_with(stack: RunningStack, seed: int) -> list[dict[str, Any]]:
    """The jobs (newest first) whose spec has ``seed``."""
    answer = httpx.get(
        f"{stack.url}/v1/jobs", params={"limit": 500}, headers=stack.admin(), timeout=10
    )
    answer.raise_for_status()
    return [job for job in answer.json()["jobs"] if job["spec"].get("seed") == seed]


def fill_form(page: Any, url: str, api_key: str, seed: int) -> Any:
    """The job form filled in for a tiny job that is never published."""
    return fill_spec(page, open_job_form(page, url, api_key), seed)


def fill_spec(page: Any, form: Any, seed: int) -> Any:
    """Fills ``form`` (the Jobs page's, open) in for a tiny job that is never published."""
    form.locator("select[name=model]").select_option("mnist_logreg")
    form.locator("input[name=epochs]").fill("1")
    form.locator("select[name=optimizer]").select_option("adam")
    form.locator("input[name=learning_rate]").fill("0.01")
    form.locator("input[name=validation_split]").fill("500")
    if not form.locator("input[name=seed]").is_visible():
        page.click("#job-form summary")
    form.locator("input[name=seed]").fill(str(seed))
    form.locator("input[name=max_train_examples]").fill("3000")
    form.locator("input[name=max_test_examples]").fill("500")
    form.locator("input[name=min_accuracy]").fill("1")
    return form


def submit(page: Any) -> None:
    """Press Submit once the form is idle, and wait for the submission's outcome."""
    page.click("#job-submit")
    page.wait_for_function(
        "([status]) => !document.getElementById('job-submit').disabled"
        " && document.querySelector(status).textContent !== 'Submitting…'",
        arg=[STATUS],
    )


def wait_for_text(page: Any, selector: str, text: str) -> str:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).textContent.includes(text)",
        arg=[selector, text],
    )
    return str(page.locator(selector).inner_text())


def lose_an_answer(page: Any, proxy: LostAnswerProxy) -> None:
    """Submit with every answer lost (the browser's own resends included), then let answers
    through again: the UI says the gateway cannot be reached, and that Submit is safe."""
    submit(page)
    assert "cannot be reached" in wait_for_text(page, ERROR, "cannot be reached")
    assert "cannot start a second job" in page.locator(STATUS).inner_text()
    proxy.lose = False


def test_submit_again_after_a_lost_answer_gets_the_same_job(
    served: Served, page: Any, proxy: LostAnswerProxy, seed: int
) -> None:
    stack = served.stack
    fill_form(page, proxy.url, stack.api_key, seed)
    lose_an_answer(page, proxy)
    [first] = jobs_with(stack, seed)  # queued by the gateway, its answer lost on the way
    submit(page)
    said = wait_for_text(page, STATUS, "Already queued as job")
    assert f"Already queued as job {first['id'][:8]}" in said
    assert page.locator(ERROR).is_hidden()
    assert [job["id"] for job in jobs_with(stack, seed)] == [first["id"]]
    # Every try went under one key (the browser may have resent the lost ones itself).
    assert len(set(proxy.keys)) == 1 and proxy.keys[0], proxy.keys
    # After a success, Submit is a new submission: a new key, a second job.
    submit(page)
    said = wait_for_text(page, STATUS, "Queued job")
    jobs = jobs_with(stack, seed)
    assert len(jobs) == 2 and f"Queued job {jobs[0]['id'][:8]}." == said, (said, jobs)
    assert proxy.keys[-1] != proxy.keys[0]


def test_submit_again_after_a_lost_answer_and_a_reload_gets_the_same_job(
    served: Served, page: Any, proxy: LostAnswerProxy, seed: int
) -> None:
    # The natural reaction to a Submit that got no answer is to reload the page: the pending
    # key lives in the tab's sessionStorage, so the same spec goes again under the same key.
    stack = served.stack
    fill_form(page, proxy.url, stack.api_key, seed)
    lose_an_answer(page, proxy)
    [first] = jobs_with(stack, seed)  # queued by the gateway, its answer lost on the way
    page.reload()
    form = page.locator("#job-form")
    form.wait_for(state="visible")  # the admin key is the tab's too: no dialog
    assert page.locator(STATUS).inner_text() == ""
    # Chromium does not restore the form's fields on a reload (they show the defaults again):
    # the user fills in the same spec again.
    fill_spec(page, form, seed)
    submit(page)
    said = page.locator(STATUS).inner_text()  # before, "Queued job <a second job's id>."
    assert said == f"Already queued as job {first['id'][:8]}: your earlier try went through."
    assert page.locator(ERROR).is_hidden()
    assert [job["id"] for job in jobs_with(stack, seed)] == [first["id"]]
    assert len(set(proxy.keys)) == 1 and proxy.keys[0], proxy.keys
    # The success ends the key, in storage too: another reload and Submit is a new job.
    page.reload()
    fill_spec(page, page.locator("#job-form"), seed)
    submit(page)
    said = wait_for_text(page, STATUS, "Queued job")
    jobs = jobs_with(stack, seed)
    assert len(jobs) == 2 and f"Queued job {jobs[0]['id'][:8]}." == said, (said, jobs)
    assert proxy.keys[-1] != proxy.keys[0]


def test_another_spec_after_a_lost_answer_is_a_new_job(
    served: Served, page: Any, proxy: LostAnswerProxy, seed: int
) -> None:
    stack = served.stack
    form = fill_form(page, proxy.url, stack.api_key, seed)
    lose_an_answer(page, proxy)
    lost_key = proxy.keys[-1]
    form.locator("input[name=epochs]").fill("2")
    submit(page)
    said = wait_for_text(page, STATUS, "Queued job")
    assert page.locator(ERROR).is_hidden()  # not 422 idempotency_key_reused
    jobs = jobs_with(stack, seed)
    assert [job["spec"]["epochs"] for job in jobs] == [2, 1], jobs
    assert said == f"Queued job {jobs[0]['id'][:8]}."
    assert proxy.keys[-1] != lost_key


def test_a_5xx_keeps_the_key_and_a_422_ends_it(served: Served, page: Any, seed: int) -> None:
    # Where crypto.randomUUID is missing (a page served over plain HTTP from another host), the
    # key is 128 random bits in hex.
    page.add_init_script("delete Crypto.prototype.randomUUID;")
    keys: list[str | None] = []
    refused: list[bool] = []

    def jobs_route(route: Any) -> None:
        request = route.request
        if request.method != "POST":
            route.continue_()
            return
        keys.append(request.headers.get("idempotency-key"))
        if not refused:  # the first submission: an ingress' 503 while the gateway restarts
            refused.append(True)
            route.fulfill(status=503, content_type="text/plain", body="no healthy upstream")
        else:
            route.continue_()

    page.route("**/v1/jobs", jobs_route)
    stack = served.stack
    form = fill_form(page, stack.url, stack.api_key, seed)
    submit(page)
    assert "503" in wait_for_text(page, ERROR, "503")
    assert "cannot start a second job" in page.locator(STATUS).inner_text()
    submit(page)
    said = wait_for_text(page, STATUS, "Queued job")
    [job] = jobs_with(stack, seed)
    assert said == f"Queued job {job['id'][:8]}."
    assert keys[0] is not None and re.fullmatch(r"[0-9a-f]{32}", keys[0]), keys
    assert keys[1] == keys[0]
    # A definite refusal (422: augment is for CIFAR-10 only) ends the key: the same spec is
    # sent under a new one next time.
    form.locator("input[name=augment]").check()
    for _ in range(2):
        submit(page)
        assert "CIFAR-10" in wait_for_text(page, ERROR, "CIFAR-10")
        assert page.locator(STATUS).inner_text() == ""
    assert len(keys) == 4 and len(set(keys)) == 3, keys
    assert len(jobs_with(stack, seed)) == 1
