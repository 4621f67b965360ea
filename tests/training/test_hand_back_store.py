"""A run's hand-back of its job, its worker stopping (training/worker_stop.py), as the job
store's one atomic step takes it (real Redis): the attempt taken back up to FDL_MAX_HAND_BACKS
hand-backs, counted past them, and the job ``failed`` at FDL_MAX_ATTEMPTS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fdl.job_records import QUEUED_KEY
from fdl.job_status_scripts import HAND_BACK_SCRIPT
from fdl.jobs import JobStatus, JobStore, NotThisRun, new_job_id
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from training import worker_stop
from training.settings import WorkerSettings

# What the store's step is given: the reasons of a run not counted and counted, the error of a
# job out of attempts; FDL_MAX_HAND_BACKS and FDL_MAX_ATTEMPTS.
REASONS = ("stopping", "stopping, counted", "stopping, out of attempts")
LIMITS = (10, 3)


def _status_events(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    events = store.read_events(job_id, count=10_000)
    return [e["data"] for _, e in events if e["type"] == "status"]


def test_the_hand_back_applies_once_and_only_to_the_runs_own_job(redis_url: str) -> None:
    """The store's step alone (real Redis): queued again with the claim's attempt taken back,
    in the queue's set of queued jobs, the reason in its event; refused (nothing written) to a
    run whose job it is not or no longer; a cancel requested meanwhile ends it ``cancelled``; a
    replay of a step that applied (its reply lost) answers as the record stands."""
    store = JobStore.from_url(redis_url)
    run, queue = "celery@a:7", f"fdl-tests-hand-back-{os.getpid()}"
    mine, other, cancelled = new_job_id(), new_job_id(), new_job_id()
    for job_id in (mine, other, cancelled):
        store.create({"model": "mnist_logreg"}, job_id, queue)
        assert store.mark_running(job_id, run if job_id != other else "celery@b:9")
    assert store.hand_back(mine, run, REASONS, *LIMITS) is JobStatus.QUEUED
    record = store.get(mine)
    assert record is not None and record["status"] == "queued", record
    assert (record["attempts"], record["handed_back"], record["worker"]) == (0, 1, None), record
    assert mine in store.redis.smembers(QUEUED_KEY.format(queue))
    event = _status_events(store, mine)[-1]
    assert event == {"status": "queued", "reason": "stopping", "handed_back": True}, event
    before = store.get(other)
    for job_id in (mine, other):  # no longer its own; never its own
        with pytest.raises(NotThisRun):
            store.hand_back(job_id, run, REASONS, *LIMITS)
    assert store.get(other) == before and len(_status_events(store, mine)) == 3
    assert store.request_cancel(cancelled) is not None
    assert store.hand_back(cancelled, run, REASONS, *LIMITS) is JobStatus.CANCELLED
    ended = store.get(cancelled)
    assert ended is not None and ended["error"] == "cancelled by request", ended
    # A retry of a step that applied, its reply lost (a proxy drops it): the same token finds
    # the step applied and answers as the record stands, one hand-back counted.
    store.create({"model": "mnist_logreg"}, replayed := new_job_id(), queue)
    assert store.mark_running(replayed, run)
    store.redis.script_load(HAND_BACK_SCRIPT)  # as on any Redis that ran it: EVALSHA runs it
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"EVALSHA", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        retrying = JobStore.from_url(proxy.url(int(redis_url.rsplit("/", 1)[1])), 10)
        try:
            assert retrying.hand_back(replayed, run, REASONS, *LIMITS) is JobStatus.QUEUED
        finally:
            retrying.redis.close()
        assert lost.fired == 1
    again = store.get(replayed)
    assert again is not None and (again["attempts"], again["handed_back"]) == (0, 1), again
    statuses = [event["status"] for event in _status_events(store, replayed)]
    assert statuses == ["queued", "running", "queued"], statuses
    for job_id in (mine, other, replayed):  # nothing left for other tests' reapers or workers
        assert store.finish(job_id, JobStatus.FAILED, error="ended by the test")


def _claim_and_hand_back(
    store: JobStore, settings: WorkerSettings, job_id: str, cycle: int
) -> JobStatus | None:
    run = f"celery@stop-{cycle}:7"
    assert store.mark_running(job_id, run)
    return worker_stop.hand_back(store, settings, job_id, run, f"in epoch {cycle} of 9", None)


def test_hand_backs_past_the_limit_count_as_attempts_until_the_job_fails(
    redis_url: str, tmp_path: Path
) -> None:
    """FDL_MAX_HAND_BACKS 2, FDL_MAX_ATTEMPTS 2: two hand-backs take their attempts back, the
    third counts its attempt (queued, ``attempts`` 1), the fourth ends the job ``failed`` with
    an error naming the hand-backs. Before, any number of them counted nothing (50 claims and
    hand-backs: ``attempts`` 0): a job that itself gets its worker stopped went round for ever."""
    settings = WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        max_hand_backs=2,
        max_attempts=2,
    )
    store = JobStore.from_url(redis_url)
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id, f"fdl-tests-hand-backs-{os.getpid()}")
    seen = []
    for cycle in (1, 2, 3):
        assert _claim_and_hand_back(store, settings, job_id, cycle) is JobStatus.QUEUED
        record = store.get(job_id)
        assert record is not None and record["status"] == "queued", record
        seen.append((record["attempts"], record["handed_back"]))
    assert seen == [(0, 1), (0, 2), (1, 3)], seen
    reasons = [e["reason"] for e in _status_events(store, job_id) if e.get("handed_back")]
    assert reasons[1].endswith(
        "in epoch 2 of 9; it starts over from its first epoch, and this "
        "run is not counted as an attempt"
    ), reasons
    counted = "counts as an attempt: the job was handed back more than FDL_MAX_HAND_BACKS (2) times"
    assert reasons[2].endswith(counted), reasons
    assert _claim_and_hand_back(store, settings, job_id, 4) is JobStatus.FAILED
    ended = store.get(job_id)
    assert ended is not None and ended["status"] == "failed", ended
    assert (ended["attempts"], ended["handed_back"], ended["finished_at"] is not None) == (
        2,
        4,
        True,
    ), ended
    error = str(ended["error"])
    assert error.startswith(
        "handed back by worker celery@stop-4:7, which is stopping, in epoch 4"
    ), error
    assert "more than FDL_MAX_HAND_BACKS (2) times" in error, error
    assert error.endswith("out of attempts (FDL_MAX_ATTEMPTS 2); giving up"), error
    assert _status_events(store, job_id)[-1] == {"status": "failed", "result": None, "error": error}
    # A run whose claim finds it failed runs nothing.
    assert not store.mark_running(job_id, "celery@stop-5:7")


def test_a_hand_back_says_after_which_epoch_the_job_resumes(redis_url: str, tmp_path: Path) -> None:
    """With a checkpoint of the job (training/checkpoints.py; after epoch 2 here, one after
    epoch 3 being written: a temporary folder, never taken), the hand-back's reason says that
    the job resumes after epoch 2, its last checkpoint, instead of that it starts over from its
    first epoch (what it says without one, and with FDL_CHECKPOINTS off)."""
    from training import checkpoint_files

    root = tmp_path / "checkpoints"
    store = JobStore.from_url(redis_url)
    queue = f"fdl-tests-hand-back-resume-{os.getpid()}"
    said = []
    for checkpoints in (True, False):
        settings = WorkerSettings(
            redis_url="redis://unused",
            model_dir=tmp_path / "m",
            var_dir=tmp_path / "v",
            checkpoint_dir=root,
            checkpoints=checkpoints,
        )
        job_id = new_job_id()
        store.create({"model": "mnist_logreg"}, job_id, queue)
        checkpoint_files.write(root, job_id, 2, lambda folder: None)
        (root / job_id / ".tmp-epoch-0003-0123456789ab").mkdir()
        run = "celery@stop-resume:7"
        assert store.mark_running(job_id, run)
        status = worker_stop.hand_back(store, settings, job_id, run, "in epoch 4 of 9", None)
        assert status is JobStatus.QUEUED
        said += [e["reason"] for e in _status_events(store, job_id) if e.get("handed_back")]
        assert store.finish(job_id, JobStatus.FAILED, error="ended by the test")
    assert said == [
        f"handed back by worker {run}, which is stopping, in epoch 4 of 9; it resumes after epoch "
        "2, its last checkpoint, and this run is not counted as an attempt",
        f"handed back by worker {run}, which is stopping, in epoch 4 of 9; it starts over from "
        "its first epoch, and this run is not counted as an attempt",
    ], said
