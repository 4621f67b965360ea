"""What the job view takes from a job's event stream, in a real headless Chromium: values that are
no numbers, and the stream's ``retry:`` field.

* A loss that is no number (a diverged job: NaN, an infinity, null, a string) broke the job's
  chart: the gateway wrote NaN and infinities as Python's ``json`` does (``NaN``, ``Infinity``),
  which is no JSON, so the view took the whole event for text and lost it (the gateway now sends
  them as null, as the job's record does; the view reads an older gateway's words too); a string
  made the chart's scale NaN, and no curve was drawn at all. Such points are now left out of
  the curves, marked with a cross at the top of the chart, and the other points drawn; the table
  shows them as they are (``no value``, the text) in red, and the summary names the epochs.
* ``retry:`` (server-sent events; sse-starlette sends ``retry: 1000`` when a gateway's shutdown
  ends a stream, ``retry: 2000`` with ``unavailable`` when Redis went away): the view, which reads
  the stream with ``fetch`` and reconnects by itself, waited its own 0.5 s whatever the server
  asked. It now waits the interval the server gave last, as EventSource does.

A lone gateway (no model server: job routes need none) on the session's Redis; the job records
are written with :class:`fdl.jobs.JobStore` under a made-up worker name (no training).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStatus, JobStore
from harness.gateway import ADMIN_KEY, Gateway

pytestmark = [pytest.mark.browser]

WORKER = "test-worker"
NAN, INF = math.nan, math.inf
NONE, INFINITY = "\u2013", "\u221e"  # the table's en dash for no value, and its infinity
# Epochs 3 and 4 diverged; 1, 2, 5 and 6 are numbers. A null validation value is no validation.
REPORTS = [
    (0.9, 0.6, 0.8, 0.65),
    (0.7, 0.7, 0.7, 0.7),
    (NAN, INF, None, 0.72),
    ("diverged", None, -INF, "n/a"),
    (0.5, 0.8, 0.6, 0.78),
    (0.4, 0.85, 0.5, 0.8),
]
# The pixels of a chart's plot area (below its legend) in the train series' colour (#4f46e5).
TRAIN_PIXELS = """(id) => {
  const canvas = document.getElementById(id);
  const ratio = canvas.width / canvas.clientWidth;
  const top = Math.ceil(30 * ratio);
  const { data } = canvas.getContext("2d").getImageData(0, top, canvas.width, canvas.height - top);
  let count = 0;
  for (let i = 0; i < data.length; i += 4) {
    const near = Math.abs(data[i] - 79) + Math.abs(data[i + 1] - 70) + Math.abs(data[i + 2] - 229);
    if (near < 40 && data[i + 3] > 200) count += 1;
  }
  return count;
}"""


@pytest.fixture
def gateway(lone_gateway: Callable[..., Any], redis_url: str) -> Iterator[Gateway]:
    with lone_gateway("gateway-stream-values", redis_url) as running:
        yield running


@pytest.fixture
def job(gateway: Gateway) -> Iterator[tuple[JobStore, str]]:
    """A running job's record (removed at the end) and the store that holds it."""
    store = JobStore.from_url(gateway.env["FDL_REDIS_URL"])
    job_id = str(store.create({"model": "mnist_logreg", "epochs": len(REPORTS)})["id"])
    assert store.mark_running(job_id, WORKER)
    yield store, job_id
    store.redis.delete(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id))
    store.redis.zrem(INDEX_KEY, job_id)
    store.redis.close()


def open_job(page: Any, gateway: Gateway, job_id: str) -> None:
    page.add_init_script(f"sessionStorage.setItem('fdl.adminKey', {json.dumps(ADMIN_KEY)})")
    page.goto(f"{gateway.url}/ui/#jobs/{job_id}")


def chart(page: Any, canvas: str) -> dict[str, int]:
    data = page.locator(f"#{canvas}").evaluate("(c) => ({ ...c.dataset })")
    return {key: int(data.get(key, -1)) for key in ("points", "skipped")}


def test_values_that_are_no_numbers_are_marked_and_the_rest_drawn(
    page: Any, gateway: Gateway, job: tuple[JobStore, str]
) -> None:
    store, job_id = job
    for epoch, (loss, accuracy, val_loss, val_accuracy) in enumerate(REPORTS, start=1):
        report = {"epoch": epoch, "epochs": len(REPORTS), "loss": loss, "accuracy": accuracy}
        report |= {"val_loss": val_loss, "val_accuracy": val_accuracy}
        assert store.update_progress(job_id, report, run=WORKER)
    store.finish(job_id, JobStatus.FAILED, error="the loss diverged", run=WORKER)
    open_job(page, gateway, job_id)
    page.wait_for_function(
        "() => document.getElementById('detail-result').textContent.includes('diverged')"
    )
    page.wait_for_function("() => document.querySelectorAll('#epoch-rows tr').length === 6")
    # The stream sends NaN and the infinities as null. Loss: train 4 drawn, NaN (null) and the
    # string marked; validation 4 drawn (its nulls, -Infinity's included, are no validation).
    # Accuracy: train 4 drawn, Infinity and None (both null) marked; validation 5 drawn, "n/a"
    # marked.
    assert chart(page, "chart-loss") == {"points": 8, "skipped": 2}
    assert chart(page, "chart-acc") == {"points": 9, "skipped": 3}
    for canvas in ("chart-loss", "chart-acc"):
        assert page.evaluate(TRAIN_PIXELS, canvas) > 40, canvas  # the curves are drawn
    cells = page.locator("#epoch-rows tr").evaluate_all(
        "(rows) => rows.map((row) => [...row.cells].slice(1, 5).map((td) =>"
        " [td.textContent, td.classList.contains('diverged')]))"
    )
    assert cells[2] == [["no value", True], ["no value", True], [NONE, False], ["72.00%", False]]
    assert cells[3] == [["diverged", True], ["no value", True], [NONE, False], ["n/a", True]]
    assert cells[4] == [["0.5000", False], ["80.00%", False], ["0.6000", False], ["78.00%", False]]
    summary = page.locator("#detail-summary").text_content()
    assert "loss not a number at epoch 3, 4" in summary


def test_the_view_waits_the_retry_interval_the_stream_gave(
    page: Any, gateway: Gateway, job: tuple[JobStore, str]
) -> None:
    """The first stream says ``retry: 3000`` and ends (the job still running), the second ends
    without one: both reconnections wait 3 s (the view's own wait was 0.5 s)."""
    _store, job_id = job
    asked: list[float] = []

    def events(route: Any) -> None:
        asked.append(time.monotonic())
        n = len(asked)
        data = json.dumps({"epoch": n, "epochs": len(REPORTS), "loss": 0.5, "accuracy": 0.8})
        body = f"id: {n}-0\nevent: progress\ndata: {data}\n\n"
        if n == 1:
            body = f"retry: 3000\n\n{body}"
        elif n == 3:
            body += 'id: 3-1\nevent: status\ndata: {"status": "succeeded"}\n\n'
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route("**/events", events)
    open_job(page, gateway, job_id)
    page.wait_for_function("() => document.querySelectorAll('#epoch-rows tr').length === 3")
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert len(gaps) == 2 and min(gaps) >= 2.9, gaps
