"""Job ids and admin keys the page cannot take at face value, in a real headless Chromium.

* Job ids: the job view built ``/v1/jobs/${id}`` without encoding the id, so an id such as
  ``../models/mnist_logreg/labels/stable`` (a hand-edited Redis record, a model version's
  ``job_id``, ``fdl.openJob``) made the browser resolve the dot segments: an admin's Cancel
  click became ``DELETE /v1/models/mnist_logreg/labels/stable``. Every URL the view builds
  (open, follow, refreshRecord, cancel) now encodes the id; the gateway answers the id of a
  record's key, in listings too, and leaves index entries that are no job ids out of them
  (tests/api/test_job_record_ids.py). Encoding leaves ``.`` and ``..`` as they are, dot segments
  the browser resolves (``#jobs/..`` asked for ``/v1/``): an id the gateway would refuse (its
  rule, JOB_ID_PATTERN) is now refused by the page, said so, and never put in a URL.
* Admin keys: one pasted with an invisible character (U+200B) made fetch throw a TypeError
  before sending anything, and the page said "The gateway cannot be reached. Is `fdl up`
  running?". The key dialog now refuses such a key, saying why (as the CLI does), and a stored
  one is reported as the key's problem, not as the gateway being down.

A lone gateway (no model server: job routes need none) on the session's Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStore, new_job_id
from harness.gateway import ADMIN_KEY, Gateway, gateway_running

pytestmark = [pytest.mark.browser]

PIVOT = "../models/mnist_logreg/labels/stable"
HOSTILE = "../../healthz"  # resolved unencoded: GET /healthz, which answers 200
ENCODED = "/v1/jobs/..%2F..%2Fhealthz"
ZWSP = "\u200b"
UNREACHABLE = "cannot be reached"
NOT_A_JOB_ID = "is not a job id"
# Ids the gateway refuses (fdl.job_records.JOB_ID_PATTERN, whole: 1 to 64 of [A-Za-z0-9_-]), as
# the Jobs page's URL holds them (#jobs/<id>, percent-encoded); "." and ".." are dot segments
# that the browser resolves ("/v1/jobs/.." is "/v1/"), whatever encodeURIComponent does.
REFUSED_IDS = {
    ".": ".",
    "..": "..",
    "%2E%2E": "..",
    "a.b": "a.b",
    "a" * 65: "a" * 65,
    "abc%0A": "abc\n",
    "%C3%A9": "\u00e9",
}


@pytest.fixture(scope="module")
def gateway(
    redis_url: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hostile-ids")
    with gateway_running(
        "gateway-hostile-ids", logs_dir, redis_url, None, tmp / "models", tmp / "secrets"
    ) as running:
        yield running


def with_key(page: Any, key: str, open_job: str | None = None) -> None:
    script = f"sessionStorage.setItem('fdl.adminKey', {json.dumps(key)});"
    if open_job is not None:
        script += f"sessionStorage.setItem('fdl.openJob', {json.dumps(open_job)});"
    page.add_init_script(script)


def api_requests(page: Any) -> list[tuple[str, str]]:
    """(method, path) of every request the page sends to the gateway but for its own files."""
    seen: list[tuple[str, str]] = []

    def note(request: Any) -> None:
        path = urlsplit(request.url).path
        if not path.startswith("/ui/"):
            seen.append((request.method, path))

    page.on("request", note)
    return seen


def test_an_opened_job_id_is_encoded_in_every_url(page: Any, gateway: Gateway) -> None:
    seen = api_requests(page)
    with_key(page, ADMIN_KEY, open_job=HOSTILE)
    page.goto(f"{gateway.url}/ui/#jobs")  # the view is asked to open fdl.openJob
    error = page.locator("#detail-error")
    error.wait_for(state="visible")
    # No job id (the gateway's rule): refused before any request, as the hash's ids are below.
    assert NOT_A_JOB_ID in error.text_content()
    assert not [path for _method, path in seen if "healthz" in path], seen
    # The job view's own requests, for the same id, still encode it: catch up, cancel, follow.
    page.evaluate(
        """async (id) => {
          const { JobView } = await import("/ui/js/job-view.js");
          const view = new JobView(() => {});
          view.job = { id, status: "running", spec: {}, progress: {} };
          view.points = new Map();
          await view.refreshRecord(new AbortController().signal);
          await view.cancel();
          const controller = new AbortController();
          window.hostileFollow = { controller, done: view.follow(controller.signal) };
        }""",
        HOSTILE,
    )
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => e.name.includes('/events'))"
    )
    page.evaluate("() => { hostileFollow.controller.abort(); return hostileFollow.done; }")
    mine = [(method, path) for method, path in seen if "healthz" in path]
    assert ("GET", ENCODED) in mine and ("DELETE", ENCODED) in mine
    assert ("GET", f"{ENCODED}/events") in mine
    assert all(path.startswith(ENCODED) for _method, path in mine), mine


def test_a_job_id_the_gateway_refuses_is_refused_by_the_page(page: Any, gateway: Gateway) -> None:
    """Job ids typed into the URL (#jobs/<id>): each one the gateway would refuse is named as no job
    id, and no request is built from it; the longest id the gateway takes is asked for."""
    seen = api_requests(page)
    with_key(page, ADMIN_KEY)
    page.goto(f"{gateway.url}/ui/#jobs")
    page.locator("#jobs-rows tr").first.wait_for()
    error = page.locator("#detail-error")
    for typed, shown in REFUSED_IDS.items():
        page.evaluate("(hash) => { location.hash = hash; }", f"#jobs/{typed}")
        page.wait_for_function(
            "(text) => document.getElementById('detail-error').textContent.includes(text)",
            arg=f"{json.dumps(shown, ensure_ascii=False)} {NOT_A_JOB_ID}",
        )
        assert page.locator("#detail-body").is_hidden() and page.locator("#job-cancel").is_hidden()
        assert "1 to 64 characters" in error.text_content()  # the rule, said
    # The listing's own requests only: no id above made a URL ("/v1/" for "..", "/v1/jobs/").
    assert {path for _method, path in seen} == {"/v1/jobs"}, seen
    longest = "a" * 64
    with page.expect_response(f"**/v1/jobs/{longest}") as answer:
        page.evaluate("(hash) => { location.hash = hash; }", f"#jobs/{longest}")
    assert answer.value.status == 404  # the gateway's job_not_found: no such job
    error.wait_for(state="visible")
    assert NOT_A_JOB_ID not in error.text_content()


def test_a_cancel_click_on_a_forged_record_never_leaves_the_job_routes(
    page: Any, gateway: Gateway
) -> None:
    """The hunter's case: job B's record says it is PIVOT, job A's that it is B; the admin opens
    the row that says B and clicks Cancel."""
    store = JobStore.from_url(gateway.env["FDL_REDIS_URL"])
    b, a = new_job_id(), new_job_id()
    # Beating an hour ahead, so that no reaper of the session settles them meanwhile.
    fields = {"status": "running", "heartbeat_at": store.now() + 3600}
    try:
        for job_id, claimed in ((b, PIVOT), (a, b)):
            store.create({"model": "mnist_logreg", "epochs": 1}, job_id)
            store.redis.hset(
                JOB_KEY.format(job_id),
                mapping={k: json.dumps(v) for k, v in {"id": claimed, **fields}.items()},
            )
        seen = api_requests(page)
        with_key(page, ADMIN_KEY)
        page.goto(f"{gateway.url}/ui/#jobs")
        page.locator(f'tr[data-job="{a}"]').wait_for()  # A is listed as A, not as B
        assert page.locator(f'tr[data-job="{b}"]').count() == 1
        page.locator(f'tr[data-job="{b}"]').click()
        page.locator("#job-cancel").wait_for(state="visible")
        with page.expect_response(lambda response: response.request.method == "DELETE"):
            page.click("#job-cancel")
        deletes = [path for method, path in seen if method == "DELETE"]
        assert deletes == [f"/v1/jobs/{b}"], deletes
        assert page.locator(f"tr[data-job='{PIVOT}']").count() == 0
    finally:
        for job_id in (a, b):
            store.redis.delete(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id))
            store.redis.zrem(INDEX_KEY, job_id)


def test_a_stored_key_that_cannot_be_sent_is_named_not_an_unreachable_gateway(
    page: Any, gateway: Gateway
) -> None:
    with_key(page, ADMIN_KEY + ZWSP)
    page.goto(f"{gateway.url}/ui/#jobs")
    error = page.locator("#jobs-error")
    error.wait_for(state="visible")
    assert "U+200B" in error.text_content() and UNREACHABLE not in error.text_content()
    # The key dialog opens, saying the same.
    page.locator("#key-dialog").wait_for(state="visible")
    assert "U+200B" in page.locator("#key-error").text_content()


def test_the_key_dialog_refuses_a_key_with_an_invisible_character(
    page: Any, gateway: Gateway
) -> None:
    page.goto(f"{gateway.url}/ui/#jobs")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")  # no key yet: the jobs listing asks for one
    page.fill("#key-input", ADMIN_KEY + ZWSP)
    page.click("#key-save")
    problem = page.locator("#key-error")
    problem.wait_for(state="visible")
    text = problem.text_content()
    assert "U+200B" in text and "'!' to '~'" in text and ADMIN_KEY not in text
    assert dialog.is_visible()
    assert page.evaluate("sessionStorage.getItem('fdl.adminKey')") is None
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-save")
    dialog.wait_for(state="hidden")
    page.wait_for_selector("#key-button.has-key")
    page.click("#jobs-refresh")
    page.locator("#jobs-rows tr").first.wait_for()
    assert page.locator("#jobs-error").is_hidden()
