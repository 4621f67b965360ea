"""The plain functions behind SIGKILL resilience, on a real Redis: the reaper requeues or fails
jobs whose heartbeat is stale, and a redelivered message never re-runs a finished job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fdl.jobs import JobStatus, JobStore
from fdl.repository import CONFIG_FILE
from training.job import run_job
from training.reaper import reap_once
from training.settings import WorkerSettings


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/2", decode_responses=True)
    client.flushdb()
    yield JobStore(client)
    client.close()


def settings(tmp_path: Path, **overrides: object) -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "m",
        var_dir=tmp_path / "v",
        stale_after_s=5,
        heartbeat_interval_s=1,
        max_attempts=2,
        **overrides,
    )


class Sent(list[tuple[str, str]]):
    """What the reaper sent: (job id, queue) pairs."""

    def __call__(self, job_id: str, queue: str, _max_duration_s: float | None = None) -> None:
        self.append((job_id, queue))


def running_job(
    store: JobStore, job_id: str, heartbeat_age: float, queue: str | None = None
) -> None:
    store.create({"model": "mnist_logreg"}, job_id, queue)
    store.mark_running(job_id, "some-worker:1")
    store.set_fields(job_id, heartbeat_at=time.time() - heartbeat_age)


def test_reaper_requeues_stale_jobs_only(store: JobStore, tmp_path: Path) -> None:
    running_job(store, "stale", heartbeat_age=60)
    running_job(store, "alive", heartbeat_age=1)
    sent = Sent()
    actions = reap_once(store, settings(tmp_path), sent)
    # A record without a queue (written before records kept one) goes to the reaper's own.
    assert actions == [("stale", "requeued")] and sent == [("stale", "training")]
    assert store.get("stale")["status"] == "queued"
    assert store.get("alive")["status"] == "running"
    # A second pass finds nothing more to do: the claim is atomic.
    assert reap_once(store, settings(tmp_path), sent) == []
    # Sent just now, a first time: the queued-job watch leaves it alone for a whole period.
    assert store.get("stale")["sent_at"] > time.time() - 60
    assert store.get("stale")["resends"] == 0


def test_reaper_ends_a_lost_job_that_was_cancelled_instead_of_rerunning_it(
    store: JobStore, tmp_path: Path
) -> None:
    running_job(store, "unwanted", heartbeat_age=60)
    assert store.request_cancel("unwanted")["status"] == "running"  # only flagged: it runs
    sent = Sent()
    assert reap_once(store, settings(tmp_path), sent) == [("unwanted", "cancelled")]
    assert sent == []
    record = store.get("unwanted")
    assert record["status"] == "cancelled" and "lost" in record["error"]


def test_reaper_resends_a_job_whose_message_never_reached_a_worker(
    store: JobStore, tmp_path: Path
) -> None:
    # What a gateway that stopped between writing the record and sending the message leaves.
    store.create({"model": "mnist_logreg"}, "orphan", "training")
    store.create({"model": "mnist_logreg"}, "fresh", "training")
    # Jobs of another queue (other workers') or of no recorded queue are not this worker's.
    store.create({"model": "mnist_logreg"}, "for-gpus", "gpu")
    store.create({"model": "mnist_logreg"}, "unrouted")
    for old in ("orphan", "for-gpus", "unrouted"):
        store.set_fields(old, created_at=time.time() - 120)
    patient = settings(tmp_path, resend_queued_after_s=60, training_queue="training")
    sent = Sent()
    assert reap_once(store, patient, sent) == [("orphan", "resent")]
    assert sent == [("orphan", "training")]
    # Once per period, and the period doubles with each resend (a job waiting behind a long
    # backlog collects a few duplicates, not one per period): 60 s, then 120, then 240.
    assert reap_once(store, patient, sent) == []
    store.set_fields("orphan", sent_at=time.time() - 90)
    assert reap_once(store, patient, sent) == []
    store.set_fields("orphan", sent_at=time.time() - 130)
    assert reap_once(store, patient, sent) == [("orphan", "resent")]
    store.set_fields("orphan", sent_at=time.time() - 200)
    assert reap_once(store, patient, sent) == []
    store.set_fields("orphan", sent_at=time.time() - 250)
    assert reap_once(store, patient, sent) == [("orphan", "resent")]
    assert store.get("orphan")["resends"] == 3
    # A job that has started, or ended, is never re-sent.
    store.mark_running("orphan", "some-worker:1")
    store.set_fields("orphan", sent_at=time.time() - 120)
    assert reap_once(store, patient, sent) == []


def test_reaper_sends_a_lost_job_back_to_the_queue_it_was_sent_to(
    store: JobStore, tmp_path: Path
) -> None:
    # A CPU worker's reaper finds a GPU job whose worker died: it must go back to the GPU
    # workers, not be trained on a CPU.
    running_job(store, "gpu-job", heartbeat_age=60, queue="gpu")
    sent = Sent()
    cpu_reaper = settings(tmp_path, training_queue="cpu")
    assert reap_once(store, cpu_reaper, sent) == [("gpu-job", "requeued")]
    assert sent == [("gpu-job", "gpu")]
    assert store.get("gpu-job")["queue"] == "gpu"


@pytest.mark.parametrize("skew_s", [-600.0, 600.0])
def test_clocks_that_disagree_never_take_a_live_job_for_lost(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skew_s: float
) -> None:
    """Heartbeats and cut-offs are read from Redis's clock: a worker or reaper whose own clock
    is ten minutes off (either way) neither takes a live job for lost nor misses a dead one."""
    store.create({"model": "mnist_logreg"}, "live", "training")
    store.mark_running("live", "some-worker:1")
    store.heartbeat("live")
    running_job(store, "dead", heartbeat_age=60, queue="training")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + skew_s)
    sent = Sent()
    assert reap_once(store, settings(tmp_path), sent) == [("dead", "requeued")]
    assert store.get("live")["status"] == "running"
    # A redelivered message of the live job, at a worker with the skewed clock, is skipped.
    before = store.get("live")
    assert run_job("live", store, settings(tmp_path)) is None
    assert store.get("live") == before


def test_jobs_that_ended_long_ago_are_removed(store: JobStore, tmp_path: Path) -> None:
    """Records, events and index entries of jobs that ended FDL_JOB_RETENTION_S ago go, so Redis
    does not grow with every job ever run; live jobs and recent ones stay, however old."""
    day = 86400.0
    jobs = ("old-done", "old-failed", "recent-done", "old-queued", "old-running")
    for job_id in jobs:  # all created 40 days ago
        store.create({"model": "mnist_logreg"}, job_id, "training")
        store.set_fields(job_id, created_at=time.time() - 40 * day)
        store.redis.zadd("fdl:jobs", {job_id: time.time() - 40 * day})
    store.finish("old-done", JobStatus.SUCCEEDED, result={})
    store.finish("old-failed", JobStatus.FAILED, error="x")
    store.finish("recent-done", JobStatus.SUCCEEDED, result={})
    for job_id in ("old-done", "old-failed"):
        store.set_fields(job_id, finished_at=time.time() - 31 * day)
    store.mark_running("old-running", "some-worker:1")
    store.set_fields("old-queued", sent_at=time.time())  # not due for a resend
    keeper = settings(tmp_path, job_retention_s=30 * day)
    actions = reap_once(store, keeper, Sent())
    assert sorted(actions) == [("old-done", "pruned"), ("old-failed", "pruned")]
    for gone in ("old-done", "old-failed"):
        assert store.get(gone) is None and store.read_events(gone) == []
    _page, total = store.list()
    assert total == 3
    assert {job_id for job_id, _ in store.statuses()} == {
        "recent-done",
        "old-queued",
        "old-running",
    }
    # 0 keeps every record.
    store.set_fields("recent-done", finished_at=time.time() - 365 * day)
    assert reap_once(store, settings(tmp_path, job_retention_s=0), Sent()) == []
    assert store.get("recent-done") is not None


def test_waiting_counts_queued_jobs_of_one_queue_once(store: JobStore) -> None:
    """What FDL_MAX_QUEUED_JOBS is compared with: records, so a re-sent message adds nothing."""
    for job_id, queue in (("a", "training"), ("b", "training"), ("c", "gpu"), ("d", "training")):
        store.create({"model": "mnist_logreg"}, job_id, queue)
    store.mark_running("b", "some-worker:1")
    store.set_fields("a", sent_at=time.time() - 3600)
    assert store.mark_resent("a", 60)  # its message sent twice: still one job
    assert store.waiting("training") == 2 and store.waiting("gpu") == 1
    assert store.waiting("nobody") == 0


def test_reaper_fails_a_job_lost_too_often(store: JobStore, tmp_path: Path) -> None:
    running_job(store, "doomed", heartbeat_age=60)
    store.set_fields("doomed", attempts=2)
    sent = Sent()
    assert reap_once(store, settings(tmp_path), sent) == [("doomed", "failed")]
    record = store.get("doomed")
    assert sent == [] and record["status"] == "failed"
    assert "no heartbeat" in record["error"] and "giving up" in record["error"]


def test_redelivered_message_of_a_finished_job_is_skipped(store: JobStore, tmp_path: Path) -> None:
    store.create({"model": "mnist_logreg"}, "done")
    store.finish("done", JobStatus.SUCCEEDED, result={"model": "x"})
    before = store.get("done")
    assert run_job("done", store, settings(tmp_path)) is None
    assert store.get("done") == before


def test_message_for_a_job_running_elsewhere_is_skipped(store: JobStore, tmp_path: Path) -> None:
    running_job(store, "busy", heartbeat_age=1)
    before = store.get("busy")
    assert run_job("busy", store, settings(tmp_path)) is None
    assert store.get("busy") == before


def test_job_out_of_attempts_fails_instead_of_running(store: JobStore, tmp_path: Path) -> None:
    store.create({"model": "mnist_logreg"}, "tired")
    store.set_fields("tired", attempts=2)
    assert run_job("tired", store, settings(tmp_path)) is None
    record = store.get("tired")
    assert record["status"] == "failed" and "gave up after 2 attempts" in record["error"]


def test_a_cancelled_job_out_of_attempts_ends_cancelled_as_the_reaper_ends_it(
    store: JobStore, tmp_path: Path
) -> None:
    """A redelivered message reaching a worker before any reaper does decides as the reaper's
    script would: a cancel requested while it ran comes before giving up."""
    running_job(store, "unwanted", heartbeat_age=60)
    store.set_fields("unwanted", attempts=2)
    store.request_cancel("unwanted")
    assert run_job("unwanted", store, settings(tmp_path)) is None
    record = store.get("unwanted")
    assert record["status"] == "cancelled", record


def test_a_redelivered_last_attempt_that_already_published_ends_succeeded(
    store: JobStore, tmp_path: Path
) -> None:
    """Its worker died after the rename, on the job's last attempt; a redelivered message
    reaches a worker before any reaper does: the job is done (it published), not failed."""
    from fdl import contract
    from training.publish import publish, staging_dir

    worker_settings = settings(tmp_path)
    store.create({"model": "mnist_logreg", "publish_as": "late"}, "late-job")
    store.mark_running("late-job", "some-worker:1")
    store.set_fields("late-job", heartbeat_at=time.time() - 60, attempts=2)
    staged = staging_dir(worker_settings.model_dir / "late", "late-job")
    (staged / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    metadata = {"job_id": "late-job", "metrics": {"test_accuracy": 0.9}}
    (staged / contract.METADATA_FILE).write_text(json.dumps(metadata))
    (staged / "saved_model.pb").write_bytes(b"graph")  # a version: it holds a graph
    assert publish(staged, worker_settings.model_dir, "late", "late-job") == (1, True)
    # The worker died before the config named the version: it is rendered again.
    config = worker_settings.model_dir / CONFIG_FILE
    config.write_text("model_config_list {\n}\n")
    result = run_job("late-job", store, worker_settings)
    assert 'name: "late"' in config.read_text()
    record = store.get("late-job")
    assert record["status"] == "succeeded" and record["error"] is None, record
    assert result == record["result"] and result["version"] == 1 and result["published"]
    assert result["metrics"] == {"test_accuracy": 0.9}
