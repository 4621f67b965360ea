"""A cancel that the gateway accepts after the run's last look at the record, in the moment
before its end is written, ends a job that published nothing ``cancelled``: the end's script
decides it with the flag in view. Before, the run checked the flag after its quality gate said
no, and a cancel accepted between that check and its end left the job ``succeeded``
(``published: false``) although ``DELETE`` had answered that it was being cancelled. A job that
did publish still ends ``succeeded``: its version exists.

The cancel comes deterministically: a proxy in front of Redis holds the run's end (the
EVALSHA of the transition script) until the test has flagged the job through a connection of
its own. Real Redis, real TensorFlow, real files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl import contract
from fdl.job_records import EVENTS_KEY, JOB_KEY, script_args
from fdl.job_scripts import TRANSITION_SCRIPT
from fdl.jobs import JobStatus, JobStore
from fdl.jobspec import PublishSpec
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from tests.training.stores import loaded_store
from tests.training.test_lost_run_finish import SERVED, run_lost, tiny_dataset, tiny_spec
from tests.training.test_lost_run_writes import RUN, raw, running_job

DB = 15
UNPUBLISHED = {"model": "m", "version": None, "published": False, "reason": "not better"}
PUBLISHED = {"model": "m", "version": 2, "published": True, "reason": None}


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


def ended(store: JobStore, job_id: str) -> tuple[Any, Any, Any, Any]:
    """The record's status, error and result, and the data of its last status event."""
    record = store.get(job_id)
    assert record is not None
    last = [e for _, e in store.read_events(job_id) if e["type"] == "status"][-1]
    return record["status"], record["error"], record["result"], last["data"]


@pytest.mark.parametrize("cancel", [True, False])
def test_an_unpublished_end_after_an_accepted_cancel_ends_cancelled(
    store: JobStore, cancel: bool
) -> None:
    job_id = running_job(store)
    if cancel:
        accepted = store.request_cancel(job_id)
        assert accepted is not None and accepted["status"] == "running"  # only flagged
    ended_as = store.end(job_id, JobStatus.SUCCEEDED, result=UNPUBLISHED, run=RUN)
    assert ended_as is (JobStatus.CANCELLED if cancel else JobStatus.SUCCEEDED)
    if not cancel:
        status = ended(store, job_id)
        assert status[:3] == ("succeeded", None, UNPUBLISHED)
        return
    stopped = "cancelled by request"
    assert ended(store, job_id) == (
        "cancelled",
        stopped,
        None,
        {"status": "cancelled", "result": None, "error": stopped},
    )
    record = store.get(job_id)
    assert record is not None and record["finished_at"] is not None


def test_a_published_end_after_an_accepted_cancel_still_succeeds(store: JobStore) -> None:
    job_id = running_job(store)
    store.request_cancel(job_id)
    assert store.end(job_id, JobStatus.SUCCEEDED, result=PUBLISHED, run=RUN) is JobStatus.SUCCEEDED
    assert ended(store, job_id)[:3] == ("succeeded", None, PUBLISHED)


def test_other_ends_are_left_as_they_are_after_a_cancel(store: JobStore) -> None:
    for status, error in ((JobStatus.FAILED, "boom"), (JobStatus.CANCELLED, "cancelled")):
        job_id = running_job(store, f"job-{status}")
        store.request_cancel(job_id)
        assert store.end(job_id, status, error=error, run=RUN) is status
        assert ended(store, job_id)[:3] == (status.value, error, None)


def test_a_replayed_end_that_ended_cancelled_answers_as_its_first_try_did(
    store: JobStore,
) -> None:
    """The script run twice with one call's arguments (its token): the replay answers 2 (ended
    cancelled) as the first try did, writing nothing. Before, it answered 1 (applied as asked),
    and a store whose first reply was lost took the end for ``succeeded``."""
    script = store.redis.register_script(TRANSITION_SCRIPT)
    job_id = running_job(store)
    store.request_cancel(job_id)
    keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)]
    event = {"status": "succeeded", "result": UNPUBLISHED, "error": None}
    args = script_args(event, RUN, status="succeeded", result=UNPUBLISHED, error=None)
    assert script(keys=keys, args=args) == 2
    after = raw(store, job_id)
    assert script(keys=keys, args=args) == 2
    assert raw(store, job_id) == after


def test_a_retried_end_whose_reply_was_lost_answers_cancelled(store: JobStore) -> None:
    """The run's end applied as ``cancelled`` (its cancellation requested meanwhile), its reply
    was lost (a proxy drops it and the connection) and the store retried it: the retry answers
    ``cancelled`` too, with one terminal event."""
    job_id = running_job(store)
    store.request_cancel(job_id)
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"EVALSHA", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        worker_store = JobStore.from_url(proxy.url(DB), retry_for_s=10)
        try:
            ended_as = worker_store.end(job_id, JobStatus.SUCCEEDED, result=UNPUBLISHED, run=RUN)
        finally:
            worker_store.redis.close()
        assert lost.fired == 1
    assert ended_as is JobStatus.CANCELLED
    statuses = [e["data"]["status"] for _, e in store.read_events(job_id) if e["type"] == "status"]
    assert statuses == ["queued", "running", "cancelled"]
    assert ended(store, job_id)[:3] == ("cancelled", "cancelled by request", None)


def test_a_cancel_accepted_just_before_the_runs_end_is_written_ends_the_job_cancelled(
    store: JobStore, tmp_path: Path
) -> None:
    """The whole run: it trains, its gate says no (the served version's accuracy 1.0 is not
    beaten), it checks the record (no cancel yet) and writes its end; the proxy holds that write
    while the gateway's cancel is accepted."""
    job_id = "cancelled-at-the-end"
    tiny_dataset(tmp_path / "data" / "tiny", piped=False)
    metadata = tmp_path / "models" / "m" / "1" / contract.METADATA_FILE
    metadata.parent.mkdir(parents=True)
    (metadata.parents[1] / "saved_model.pb").write_bytes(b"graph")  # a version: it holds a graph
    metadata.write_text(json.dumps(SERVED))
    accepted: list[dict[str, Any] | None] = []

    def cancel() -> None:  # as DELETE /v1/jobs/{id} does, between the last check and the end
        accepted.append(store.request_cancel(job_id))

    sha = hashlib.sha1(TRANSITION_SCRIPT.encode()).hexdigest().encode()
    kwargs = store.redis.connection_pool.connection_kwargs
    held = Rule(sha, "hold_request", 1, then=cancel)  # the end waits for the cancel
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), held) as proxy:
        worker_store = JobStore.from_url(proxy.url(DB))
        try:
            spec = tiny_spec(PublishSpec(only_if_better=True))
            _, returned, settings = run_lost(worker_store, tmp_path, job_id, spec, [])
        finally:
            worker_store.redis.close()
    assert held.seen == 1
    assert returned is None  # as for any end but succeeded: not the unpublished result
    assert accepted and accepted[0] is not None
    assert accepted[0]["status"] == "running" and accepted[0]["cancel_requested"]
    status, error, result, event = ended(store, job_id)
    assert (status, error, result) == ("cancelled", "cancelled by request", None)
    assert event["status"] == "cancelled"
    assert sorted(p.name for p in (settings.model_dir / "m").iterdir()) == ["1"]  # nothing new
