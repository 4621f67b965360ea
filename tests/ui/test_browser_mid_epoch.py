"""The job view counts an epoch as done at its own report (the one without ``step``) only. A
worker used to report the last batch a call into the compiled graph could run (step 16 of an
epoch's 4), and the view read ``step >= steps`` as the epoch's end: the epoch's table got a row
with no validation before the epoch ended, and the last epoch's said "evaluating and
publishing…" while it still trained. The job is a record written with :class:`fdl.jobs.JobStore`
on the UI stack's Redis, running under a made-up worker name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fdl.jobs import JobStatus, JobStore
from fdl.stack import REDIS_URL_FILE
from harness.stack import RunningStack
from tests.ui.test_browser import open_job_form

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORKER = "test-worker"


@pytest.fixture
def store(ui_stack: RunningStack) -> Iterator[JobStore]:
    store = JobStore.from_url((ui_stack.var_dir / REDIS_URL_FILE).read_text().strip())
    yield store
    store.redis.close()


def report(**fields: Any) -> dict[str, Any]:
    return {"epoch": 1, "epochs": 1, "loss": 0.5, "accuracy": 0.8, **fields}


def test_a_mid_epoch_report_never_ends_the_epoch(
    ui_stack: RunningStack, page: Any, store: JobStore
) -> None:
    job_id = store.create({"model": "mnist_logreg", "epochs": 1})["id"]
    assert store.mark_running(job_id, WORKER)
    mid = {"val_loss": None, "val_accuracy": None, "images_per_second": 321.0, "eta_seconds": 3}
    try:
        for step in (2, 16):  # 16 of 4, as such a worker reported it
            assert store.update_progress(job_id, report(step=step, steps=4, **mid), run=WORKER)
        open_job_form(page, ui_stack.url, ui_stack.api_key)
        page.locator(f"#jobs-rows tr[data-job='{job_id}']").click()
        summary = page.locator("#detail-summary")
        page.wait_for_function(
            "() => document.getElementById('detail-summary').textContent.includes('321 images/s')"
        )
        assert page.locator("#epoch-rows tr").count() == 0
        assert "evaluating" not in summary.text_content(), summary.text_content()
        end = report(val_loss=0.6, val_accuracy=0.75, images_per_second=300.0, eta_seconds=0)
        assert store.update_progress(job_id, end, run=WORKER)
        page.wait_for_function("() => document.querySelectorAll('#epoch-rows tr').length === 1")
        assert "evaluating and publishing" in summary.text_content(), summary.text_content()
        assert "75.00%" in page.locator("#epoch-rows tr").text_content()
    finally:
        store.finish(job_id, JobStatus.CANCELLED, run=WORKER)
