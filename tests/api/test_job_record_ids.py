"""A job record whose stored ``id`` is not the id of its key (only a hand-edited Redis holds one).

The UI builds its URLs from the ids the gateway answers: a record of job B whose id field read
``../models/mnist_logreg/labels/stable`` turned an admin's Cancel click on B into
``DELETE /v1/models/mnist_logreg/labels/stable``, and a record of job A whose id field read B was
listed as B (its Cancel cancelled B). Now every read of a record (fdl/job_reads.py: one job, a
listing, the reaper's) takes the id of the key it was read by, logging a warning, and listings
leave out an index entry that is no job id. Real gateway, real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from fdl.job_records import EVENTS_KEY, INDEX_KEY, JOB_KEY
from fdl.jobs import JobStore, new_job_id
from harness.gateway import Gateway, log_lines

PIVOT = "../models/mnist_logreg/labels/stable"
SPEC = {"model": "mnist_logreg", "epochs": 1}


@pytest.fixture
def forged(gateway: Gateway) -> Iterator[tuple[str, str]]:
    """Job B, whose record says it is PIVOT, job A, whose record says it is B, and an index
    entry PIVOT with a record; all running (beating an hour ahead, so that no reaper of the
    session settles them meanwhile), all removed afterwards."""
    store = JobStore.from_url(gateway.env["FDL_REDIS_URL"])
    b, a = new_job_id(), new_job_id()
    fields = {"status": "running", "heartbeat_at": store.now() + 3600}
    try:
        for job_id, claimed in ((b, PIVOT), (a, b), (PIVOT, PIVOT)):
            store.create(SPEC, job_id)
            store.redis.hset(
                JOB_KEY.format(job_id),
                mapping={k: json.dumps(v) for k, v in {"id": claimed, **fields}.items()},
            )
        yield a, b
    finally:
        for job_id in (a, b, PIVOT):
            store.redis.delete(JOB_KEY.format(job_id), EVENTS_KEY.format(job_id))
            store.redis.zrem(INDEX_KEY, job_id)


def test_one_job_is_answered_with_the_id_of_its_key(
    gateway: Gateway, forged: tuple[str, str]
) -> None:
    a, b = forged
    with httpx.Client(base_url=gateway.url, headers=gateway.admin(), timeout=30) as client:
        assert client.get(f"/v1/jobs/{b}").json()["id"] == b
        assert client.get(f"/v1/jobs/{a}").json()["id"] == a
        assert client.head(f"/v1/jobs/{b}").status_code == 200
        cancelled = client.delete(f"/v1/jobs/{b}")
        assert cancelled.status_code == 200 and cancelled.json()["id"] == b
    warned = [
        line for line in log_lines(gateway.process) if "holds another id" in line.get("message", "")
    ]
    assert any(b in line["message"] and PIVOT in line["message"] for line in warned), warned


@pytest.mark.parametrize("status", [None, "running"])
def test_listings_answer_the_ids_of_the_keys_and_leave_out_an_entry_that_is_no_job_id(
    gateway: Gateway, forged: tuple[str, str], status: str | None
) -> None:
    params = {"limit": 500, **({"status": status} if status else {})}
    # A listing by status reads ids from a snapshot up to 2 s old: polled until it has them.
    deadline = time.monotonic() + 30
    while True:
        listed = httpx.get(
            f"{gateway.url}/v1/jobs", params=params, headers=gateway.admin(), timeout=30
        )
        assert listed.status_code == 200, listed.text
        ids = [job["id"] for job in listed.json()["jobs"]]
        assert PIVOT not in ids
        if set(forged) <= set(ids) or time.monotonic() > deadline:
            break
    assert set(forged) <= set(ids)  # job A's record, which names B, is listed as A
    assert ids.count(forged[1]) == 1
    left_out = [
        line
        for line in log_lines(gateway.process)
        if "left out of the listing" in line.get("message", "")
    ]
    assert any(PIVOT in line["message"] for line in left_out)
