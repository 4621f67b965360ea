"""The Jobs page through a key that stops working, a stream that goes down, polling, paging past
the end, actions waiting for the key, and reloads.

Before: a job followed when its stream met a 401 stayed frozen (an old epoch, "the API key is not
valid") after the key was saved, until its row was clicked again; a stream down for a running
job froze the card without a word; every 5 s poll (and every epoch) rebuilt the job's row, so
keyboard focus on it fell to <body>; a page past the end (its jobs removed) said "No jobs yet."
and "16-15 of 12"; Cancel and Submit without a key did nothing once the key was saved; a reload
forgot the job watched. The jobs are records written with :class:`fdl.jobs.JobStore` on the UI
stack's Redis, running under a made-up worker name (no training), removed at the end; 401s and
broken streams are played by ``page.route``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStatus, JobStore
from fdl.stack import REDIS_URL_FILE
from harness.stack import RunningStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORKER = "test-worker"
SPEC = {"model": "mnist_logreg", "epochs": 3}
REFUSED = json.dumps({"error": {"code": "unauthorized", "message": "the API key is not valid"}})


class Jobs:
    """Job records made by a test, cancelled and removed at its end."""

    def __init__(self, stack: RunningStack) -> None:
        self.store = JobStore.from_url((stack.var_dir / REDIS_URL_FILE).read_text().strip())
        self.ids: list[str] = []

    def running(self) -> str:
        job_id = str(self.store.create(SPEC)["id"])
        self.ids.append(job_id)
        assert self.store.mark_running(job_id, WORKER)
        return job_id

    def progress(self, job_id: str, epoch: int) -> None:
        report = {"epoch": epoch, "epochs": 3, "loss": 0.5, "accuracy": 0.8}
        assert self.store.update_progress(job_id, report, run=WORKER)

    def last_event_id(self, job_id: str) -> str:
        [(event_id, _fields)] = self.store.redis.xrevrange(EVENTS_KEY.format(job_id), count=1)
        return str(event_id)

    def remove(self, job_id: str) -> None:
        self.store.finish(job_id, JobStatus.CANCELLED, run=WORKER)
        self.store.redis.delete(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id))
        self.store.redis.zrem(INDEX_KEY, job_id)

    def close(self) -> None:
        for job_id in self.ids:
            self.remove(job_id)
        self.store.redis.close()


@pytest.fixture
def jobs(ui_stack: RunningStack) -> Iterator[Jobs]:
    made = Jobs(ui_stack)
    yield made
    made.close()


def with_key(page: Any, stack: RunningStack) -> None:
    """The admin key in the tab's sessionStorage before the page loads: no dialog."""
    page.add_init_script(f"sessionStorage.setItem('fdl.adminKey', {json.dumps(stack.api_key)})")


def open_job(page: Any, stack: RunningStack, job_id: str) -> None:
    page.goto(f"{stack.url}/ui/#jobs")
    page.locator(f"#jobs-rows tr[data-job='{job_id}']").click()
    page.wait_for_function(
        "(id) => document.getElementById('detail-id').textContent === id", arg=job_id
    )


def wait_summary(page: Any, text: str, timeout: float = 20_000) -> None:
    page.wait_for_function(
        "(text) => document.getElementById('detail-summary').textContent.includes(text)",
        arg=text,
        timeout=timeout,
    )


def watch_a_restart(
    page: Any, stack: RunningStack, jobs: Jobs, after: Callable[[Any, int], None]
) -> tuple[str, str, list[str | None]]:
    """A running job opened in the view, its first stream sending the job's first epoch and then
    ending (a gateway restart); each later stream request is handed to ``after(route, n)`` (n: 2
    for the first reconnection). Returns the job's id, that event's id and the ``Last-Event-ID``
    of each stream request."""
    job_id = jobs.running()
    jobs.progress(job_id, 1)
    last = jobs.last_event_id(job_id)
    asked: list[str | None] = []

    def events(route: Any) -> None:
        asked.append(route.request.headers.get("last-event-id"))
        if len(asked) > 1:
            after(route, len(asked))
            return
        data = json.dumps({"epoch": 1, "epochs": 3, "loss": 0.5, "accuracy": 0.8})
        body = f"id: {last}\nevent: progress\ndata: {data}\n\n"
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route("**/events", events)
    with_key(page, stack)
    open_job(page, stack, job_id)
    return job_id, last, asked


def test_a_saved_key_resumes_the_followed_jobs_stream(
    ui_stack: RunningStack, page: Any, jobs: Jobs
) -> None:
    def after(route: Any, n: int) -> None:
        if n == 2:  # the gateway restarted with another key
            route.fulfill(status=401, content_type="application/json", body=REFUSED)
        else:
            route.continue_()

    job_id, last, asked = watch_a_restart(page, ui_stack, jobs, after)
    page.locator("#key-dialog").wait_for(state="visible")
    assert "not valid" in page.inner_text("#detail-error")
    page.fill("#key-input", ui_stack.api_key)
    page.click("#key-save")
    jobs.progress(job_id, 2)
    wait_summary(page, "epoch 2 of 3")  # before, it stayed at epoch 1 until clicked again
    assert page.locator("#detail-error").is_hidden()
    assert asked[2] == last, asked  # resumed after the last event it was given


def test_a_stream_down_is_shown_until_events_flow_again(
    ui_stack: RunningStack, page: Any, jobs: Jobs
) -> None:
    down = [True]

    def after(route: Any, n: int) -> None:
        if down[0]:  # a gateway that does not answer
            route.abort("connectionrefused")
        else:
            route.continue_()

    job_id, _last, _asked = watch_a_restart(page, ui_stack, jobs, after)
    lost = page.locator("#detail-connection")
    lost.wait_for(state="visible")
    assert "reconnecting" in lost.inner_text()
    assert page.locator("#detail-error").is_hidden()
    down[0] = False
    jobs.progress(job_id, 2)
    wait_summary(page, "epoch 2 of 3")
    lost.wait_for(state="hidden")


def test_polling_keeps_focus_on_the_jobs_row(ui_stack: RunningStack, page: Any, jobs: Jobs) -> None:
    job_id = jobs.running()
    jobs.progress(job_id, 1)
    with_key(page, ui_stack)
    open_job(page, ui_stack, job_id)
    row = page.locator(f"#jobs-rows tr[data-job='{job_id}']")
    row.focus()
    page.evaluate("window.focusedRow = document.activeElement")
    # An epoch's end updates the row at once, from the stream.
    jobs.progress(job_id, 2)
    page.wait_for_function(
        "(id) => document.querySelector(`#jobs-rows tr[data-job='${id}']`)"
        ".cells[3].textContent === '2/3'",
        arg=job_id,
    )
    assert page.evaluate("document.activeElement === window.focusedRow")
    # Two polls: the first has been drawn by the time the second answers.
    for _ in range(2):
        with page.expect_response(lambda r: "/v1/jobs?limit=" in r.url, timeout=15_000):
            pass
    assert page.evaluate("document.activeElement === window.focusedRow"), page.evaluate(
        "document.activeElement.outerHTML.slice(0, 80)"
    )


def test_a_page_past_the_end_goes_back_to_the_last_page(
    ui_stack: RunningStack, page: Any, jobs: Jobs
) -> None:
    answer = httpx.get(f"{ui_stack.url}/v1/jobs", headers=ui_stack.admin(), timeout=10)
    before = answer.json()["total"]
    if before > 12:
        pytest.skip(f"the stack holds {before} jobs already: this test needs at most 12")
    made = [jobs.running() for _ in range(20 - before)]
    with_key(page, ui_stack)
    page.goto(f"{ui_stack.url}/ui/#jobs")
    page.wait_for_function(
        "() => document.getElementById('jobs-page').textContent === '1\u201315 of 20'"
    )
    page.click("#jobs-next")
    page.wait_for_function(
        "() => document.getElementById('jobs-page').textContent === '16\u201320 of 20'"
    )
    for job_id in made[:8]:
        jobs.remove(job_id)
        jobs.ids.remove(job_id)
    page.click("#jobs-refresh")
    page.wait_for_function(
        "() => document.getElementById('jobs-page').textContent === '1\u201312 of 12'"
    )
    assert page.locator("#jobs-rows tr[data-job]").count() == 12
    assert "No jobs" not in page.inner_text("#jobs-rows")
    assert page.locator("#jobs-prev").is_disabled() and page.locator("#jobs-next").is_disabled()


def test_cancel_and_submit_carry_on_once_the_key_is_saved(
    ui_stack: RunningStack, page: Any, jobs: Jobs
) -> None:
    job_id = jobs.running()
    submitted: list[str | None] = []

    def post_jobs(route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        submitted.append(route.request.headers.get("idempotency-key"))
        route.fulfill(status=503, content_type="text/plain", body="no healthy upstream")

    page.route("**/v1/jobs", post_jobs)
    with_key(page, ui_stack)
    open_job(page, ui_stack, job_id)
    page.evaluate("sessionStorage.removeItem('fdl.adminKey')")
    dialog = page.locator("#key-dialog")
    page.click("#job-cancel")
    dialog.wait_for(state="visible")
    with page.expect_request(lambda r: r.method == "DELETE" and job_id in r.url):
        page.fill("#key-input", ui_stack.api_key)
        page.click("#key-save")
    page.wait_for_function(
        "(id) => document.getElementById('detail-id').textContent === id", arg=job_id
    )
    page.evaluate("sessionStorage.removeItem('fdl.adminKey')")
    page.click("#job-submit")
    dialog.wait_for(state="visible")
    assert submitted == []
    page.fill("#key-input", ui_stack.api_key)
    page.click("#key-save")
    page.wait_for_function(
        "() => document.getElementById('job-form-error').textContent.includes('503')"
    )
    assert len(submitted) == 1 and submitted[0], submitted


def test_the_watched_job_is_in_the_url(ui_stack: RunningStack, page: Any, jobs: Jobs) -> None:
    first, second = jobs.running(), jobs.running()
    with_key(page, ui_stack)
    open_job(page, ui_stack, first)
    assert page.evaluate("location.hash") == f"#jobs/{first}"
    page.locator(f"#jobs-rows tr[data-job='{second}']").click()
    page.wait_for_function("(id) => location.hash === `#jobs/${id}`", arg=second)
    page.reload()
    page.wait_for_function(
        "(id) => document.getElementById('detail-id').textContent === id", arg=second
    )
    page.go_back()
    page.wait_for_function(
        "(id) => document.getElementById('detail-id').textContent === id", arg=first
    )
    assert page.locator("#view-jobs").is_visible()
