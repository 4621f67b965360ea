"""The job view's event stream when the connection or the job goes away without a word.

A stream that goes silent (its connection dead but never closed: a laptop's sleep, a proxy that
dropped it) used to freeze the curves for good; the view now takes silence past its watchdog
(30 s; 3 s here, through ``window.FDL_STREAM_IDLE_MS``) for a broken stream and reconnects with
the last event's id. A job whose record is removed (``FDL_JOB_RETENTION_S``) used to be asked
for every 5 s forever, silently; the view now says it no longer exists and stops, on the
gateway's own 404 (``job_not_found``) only: a proxy's 404 is retried. A stream whose event
handler throws is closed, giving its slot (``FDL_MAX_EVENT_STREAMS``) back to the gateway.

The jobs are records written with :class:`fdl.jobs.JobStore` on the UI stack's Redis, running
under a made-up worker name (never sent to a worker), so the test decides when events come; the
browser reaches the stack's gateway through :class:`tests.ui.stall_proxy.StallProxy`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStatus, JobStore
from fdl.stack import REDIS_URL_FILE
from harness.gateway import ADMIN_KEY, start_gateway
from harness.procs import wait_for
from harness.stack import Served
from tests.ui.stall_proxy import StallProxy
from tests.ui.test_browser import open_job_form

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORKER = "test-worker"
IDLE_S = 3.0


@pytest.fixture
def store(served: Served) -> Iterator[JobStore]:
    redis_url = (served.stack.var_dir / REDIS_URL_FILE).read_text().strip()
    store = JobStore.from_url(redis_url)
    yield store
    store.redis.close()


@pytest.fixture
def proxy(served: Served) -> Iterator[StallProxy]:
    proxy = StallProxy(served.stack.url)
    yield proxy
    proxy.close()


@pytest.fixture
def running_job(store: JobStore) -> Iterator[str]:
    """A job running under ``WORKER``, one epoch of three reported."""
    job_id = store.create({"model": "mnist_logreg", "epochs": 3})["id"]
    assert store.mark_running(job_id, WORKER)
    assert store.update_progress(job_id, epoch_report(1), run=WORKER)
    yield job_id
    if store.get(job_id) is not None:
        store.finish(job_id, JobStatus.CANCELLED, run=WORKER)


def epoch_report(epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "epochs": 3,
        "loss": 1.0 / epoch,
        "accuracy": 0.5 + epoch / 10,
        "val_loss": 1.1 / epoch,
        "val_accuracy": 0.45 + epoch / 10,
        "images_per_second": 1000.0,
    }


def open_job(page: Any, proxy: StallProxy, api_key: str, job_id: str) -> None:
    page.add_init_script(f"window.FDL_STREAM_IDLE_MS = {IDLE_S * 1000:.0f};")
    open_job_form(page, proxy.url, api_key)
    page.locator(f"#jobs-rows tr[data-job='{job_id}']").click()
    page.wait_for_function(
        "() => document.getElementById('detail-status').textContent === 'running'"
    )


def epoch_rows(page: Any) -> int:
    return int(page.locator("#epoch-rows tr").count())


def test_a_silent_stream_is_reconnected_after_the_last_event(
    served: Served, page: Any, store: JobStore, proxy: StallProxy, running_job: str
) -> None:
    proxy.stall.add(running_job)
    open_job(page, proxy, served.stack.api_key, running_job)
    first = wait_for(lambda: proxy.requests_for(running_job), 30, "the view's event stream")[0]
    wait_for(lambda: first.forwarded_id, 30, "the stream's first event to pass")
    # Silence from here on: the watchdog aborts the stream and the view asks again, from the
    # event it was given (the view's back-off after a failure adds at most 1 s).
    again = wait_for(
        lambda: proxy.requests_for(running_job)[1:],
        IDLE_S + 10,
        "the view to reconnect after the stream went silent",
    )[0]
    assert again.last_event_id == first.forwarded_id
    assert again.at - first.at >= IDLE_S - 0.5, "reconnected before the watchdog's time"
    # Following again: the next epoch is drawn.
    page.wait_for_function("(n) => document.querySelectorAll('#epoch-rows tr').length === n", arg=1)
    assert store.update_progress(running_job, epoch_report(2), run=WORKER)
    page.wait_for_function("(n) => document.querySelectorAll('#epoch-rows tr').length === n", arg=2)
    assert page.locator("#detail-error").is_hidden()


def test_a_job_whose_record_is_removed_is_no_longer_followed(
    served: Served, page: Any, store: JobStore, proxy: StallProxy, running_job: str
) -> None:
    open_job(page, proxy, served.stack.api_key, running_job)
    wait_for(lambda: proxy.requests_for(running_job), 30, "the view's event stream")
    page.wait_for_function("() => document.querySelectorAll('#epoch-rows tr').length === 1")
    # What the retention reaper removes (JobStore.prune), taken while the job still runs: the
    # stream ends without a final event and the job's routes answer 404.
    store.redis.delete(JOB_KEY.format(running_job), EVENTS_KEY.format(running_job))
    store.redis.zrem(INDEX_KEY, running_job)
    problem = page.locator("#detail-error")
    problem.wait_for(state="visible", timeout=20_000)
    assert "This job no longer exists (its record was removed)." in problem.inner_text()
    assert page.locator("#job-cancel").is_hidden()
    # And it is asked for no more: nothing in longer than the view's longest back-off (5 s).
    asked = len(proxy.requests_for(running_job))
    page.wait_for_timeout(7_000)
    assert len(proxy.requests_for(running_job)) == asked


def test_a_404_that_is_not_the_gateways_is_retried(
    served: Served, page: Any, store: JobStore, proxy: StallProxy, running_job: str
) -> None:
    # The proxy answers the view's first stream a plain-text 404 of its own (an ingress without
    # the route, say): the job is still there, so the view asks again and goes on following.
    proxy.not_found.add(running_job)
    open_job(page, proxy, served.stack.api_key, running_job)
    wait_for(lambda: proxy.requests_for(running_job)[1:], 20, "the view to ask again")
    page.wait_for_function("(n) => document.querySelectorAll('#epoch-rows tr').length === n", arg=1)
    assert store.update_progress(running_job, epoch_report(2), run=WORKER)
    page.wait_for_function("(n) => document.querySelectorAll('#epoch-rows tr').length === n", arg=2)
    assert page.locator("#detail-error").is_hidden()
    assert page.locator("#job-cancel").is_visible()


def stream_status(url: str, job_id: str) -> int:
    """The status the gateway answers a new event stream of ``job_id`` with (then closed)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as answer,
    ):
        return answer.status_code


def test_a_stream_whose_handler_throws_gives_its_slot_back(
    served: Served, page: Any, running_job: str, logs_dir: Path, tmp_path: Path
) -> None:
    stack = served.stack
    gateway = start_gateway(
        "gateway-one-stream-throw",
        logs_dir,
        (stack.var_dir / REDIS_URL_FILE).read_text().strip(),
        int(stack.env["FDL_SERVING_GRPC_PORT"]),
        stack.model_dir,
        tmp_path / "keys",
        FDL_MAX_EVENT_STREAMS="1",
    )
    with closing(gateway):
        page.goto(f"{gateway.url}/ui/")
        page.evaluate("(key) => sessionStorage.setItem('fdl.adminKey', key)", ADMIN_KEY)
        # The page's own followEvents on the running job's stream (which would never end), its
        # handler throwing at the first event: the call fails with that error...
        failed = page.evaluate(
            """async (path) => {
                const { followEvents } = await import("/ui/js/api.js");
                try {
                    await followEvents(path, { onEvent: () => { throw new Error("handler"); } });
                    return "ended";
                } catch (error) {
                    return error.message;
                }
            }""",
            f"/v1/jobs/{running_job}/events",
        )
        assert failed == "handler"
        # ...and the stream is closed: the gateway's one slot is free again (503 while held).
        wait_for(
            lambda: stream_status(gateway.url, running_job) == 200,
            15,
            "the gateway's one stream slot to be given back",
        )
