"""A run that lost its job (another run claimed it while this one went unheard, or finished it)
writes nothing more into the job's record: its heartbeats, progress reports, events and field
updates carry the worker name it claimed the job under, and the record refuses them once it no
longer runs under that name. The run then stops as a run that is no longer its job's: nothing
published, no status written, its heartbeat thread stopped. Before, such a run trained on,
appended its ``progress`` events after the other run's terminal ``succeeded`` event, overwrote
that record's progress, and its heartbeats kept ``heartbeat_at`` fresh for a job it no longer
held, hiding from the reaper that the run holding it had died. Real Redis, real TensorFlow."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.job_records import EVENTS_KEY, JOB_KEY
from fdl.job_scripts import SET_FIELDS_SCRIPT
from fdl.jobs import JobStatus, JobStore, NotThisRun
from fdl.jobspec import JobSpec
from harness.procs import wait_for
from tests.training.stores import store_on_db
from training.heartbeat import Heartbeat

DB = 11
RUN, OTHER = "node-a:7", "node-b:9"
PROGRESS = {"epoch": 1, "epochs": 8, "loss": 0.5}
RESULT = {"model": "m", "version": 1, "published": True}


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def raw(store: JobStore, job_id: str) -> tuple[dict[str, str], list[Any]]:
    """The job's hash and its event stream, exactly as Redis holds them."""
    return (
        store.redis.hgetall(JOB_KEY.format(job_id)),  # type: ignore[return-value]
        store.redis.xrange(EVENTS_KEY.format(job_id)),  # type: ignore[list-item]
    )


def claimed_by_other(store: JobStore, job_id: str) -> None:
    """Another run claims the job as a reaper's re-run does (its threshold passes this run's
    heartbeat), then goes unheard itself: its heartbeat is old."""
    assert store.mark_running(job_id, OTHER, heartbeat_before=store.now() + 60)
    assert store.set_fields(job_id, heartbeat_at=store.now() - 600)  # no run: as a reaper's


def finished_by_other(store: JobStore, job_id: str) -> None:
    """Another run claims the job and finishes it first."""
    assert store.mark_running(job_id, OTHER, heartbeat_before=store.now() + 60)
    assert store.finish(job_id, JobStatus.SUCCEEDED, result=RESULT)


def requeued_by_reaper(store: JobStore, job_id: str) -> None:
    """A reaper took this run for lost and queued the job again (no worker holds it)."""
    assert store.settle_lost(job_id, store.now() + 60, 1, "worker lost") == "queued"


TAKEOVERS = {
    "claimed": claimed_by_other,
    "finished": finished_by_other,
    "requeued": requeued_by_reaper,
}


def running_job(store: JobStore, job_id: str = "job") -> str:
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, RUN)
    return job_id


@pytest.mark.parametrize("takeover", sorted(TAKEOVERS))
def test_a_runs_writes_apply_only_while_the_record_runs_under_its_name(
    store: JobStore, takeover: str
) -> None:
    job_id = running_job(store)
    assert store.heartbeat(job_id, RUN)
    assert store.update_progress(job_id, PROGRESS, RUN)
    assert store.append_event(job_id, "log", {"message": "loading"}, run=RUN)
    assert store.set_fields(job_id, run=RUN, note="mine")
    TAKEOVERS[takeover](store, job_id)
    before = raw(store, job_id)
    writes: list[Callable[[], object]] = [
        lambda: store.heartbeat(job_id, RUN),
        lambda: store.update_progress(job_id, {"epoch": 2, "epochs": 8}, RUN),
        lambda: store.append_event(job_id, "log", {"message": "late"}, run=RUN),
        lambda: store.append_event(job_id, "log", {"message": "late"}, retry=False, run=RUN),
        lambda: store.set_fields(job_id, run=RUN, note="late"),
    ]
    for write in writes:
        with pytest.raises(NotThisRun):
            write()
        assert raw(store, job_id) == before  # nothing written, no event appended

    # Writes of no run (the gateway's, a reaper's) still apply.
    assert store.set_fields(job_id, note="reaper")
    assert store.append_event(job_id, "log", {"message": "from the gateway"})
    assert store.get(job_id)["note"] == "reaper"  # type: ignore[index]


def test_a_runs_write_to_a_gone_record_writes_nothing_and_raises_nothing(store: JobStore) -> None:
    assert store.heartbeat("gone", RUN) is False
    assert store.update_progress("gone", PROGRESS, RUN) is False
    assert store.append_event("gone", "log", {"message": "late"}, run=RUN) is None
    assert store.redis.exists(JOB_KEY.format("gone"), EVENTS_KEY.format("gone")) == 0


def test_a_retried_event_of_the_run_is_appended_once_even_after_it_lost_the_job(
    store: JobStore,
) -> None:
    """A retry of a run's event whose reply was lost answers the first try's id and appends
    nothing, also once another run has the job (the event was written while it was this run's);
    a new event of the run is refused."""
    job_id = running_job(store)
    script = store.redis.register_script(SET_FIELDS_SCRIPT)
    keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)]
    args = ["progress", json.dumps(PROGRESS), str(time.time()), uuid.uuid4().hex, RUN]
    first = script(keys=keys, args=args)
    assert script(keys=keys, args=args) == first  # a retry before the takeover
    claimed_by_other(store, job_id)
    assert script(keys=keys, args=args) == first  # and after it
    fresh = ["progress", json.dumps(PROGRESS), str(time.time()), uuid.uuid4().hex, RUN]
    assert script(keys=keys, args=fresh) == -1
    kinds = [e["type"] for _, e in store.read_events(job_id)]
    assert kinds == ["status", "status", "progress", "status"]


def test_the_heartbeat_of_a_run_that_lost_its_job_stops_and_leaves_it_stale(
    store: JobStore,
) -> None:
    """The run holding the job now went unheard too (its heartbeat is old): the lost run's beats
    must not refresh it, or the reaper would never take the job back."""
    job_id = running_job(store)
    start = float(store.get(job_id)["heartbeat_at"])  # type: ignore[index]

    def beat_at() -> float:
        return float(store.get(job_id)["heartbeat_at"])  # type: ignore[index]

    with Heartbeat(store, job_id, 0.05, RUN) as beat:
        wait_for(lambda: beat_at() > start, 10, "a beat of the run holding the job")
        claimed_by_other(store, job_id)
        stale = beat_at()
        assert beat.lost.wait(10), "the lost run's heartbeat went on"
        wait_for(
            lambda: f"heartbeat-{job_id}" not in {t.name for t in threading.enumerate()},
            10,
            "the heartbeat thread to stop",
        )
        assert beat_at() == stale
    attempts = int(store.get(job_id)["attempts"])  # type: ignore[index]
    assert store.settle_lost(job_id, store.now() - 5, attempts, "lost") == "queued"


def epochs_trained(tensorboard_dir: Path) -> int:
    """How many epochs the run trained, from the epoch losses its TensorBoard logs hold."""
    import tensorflow as tf

    epochs = set()
    for events_file in (tensorboard_dir / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events_file)):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                epochs.add(event.step)
    return len(epochs)


class TakeOver(threading.Thread):
    """Waits for the running job's first ``progress`` event, then ``take``s the job from it as
    another run would, and keeps what the record and its events were just after."""

    def __init__(self, store: JobStore, job_id: str, take: Callable[[JobStore, str], None]):
        super().__init__(name="take-over", daemon=True)
        self.store, self.job_id, self.take = store, job_id, take
        self.after: tuple[dict[str, str], list[Any]] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            last, deadline = "0-0", time.monotonic() + 120
            while time.monotonic() < deadline:
                events = self.store.read_events(self.job_id, last, block_ms=200)
                if any(event["type"] == "progress" for _, event in events):
                    self.take(self.store, self.job_id)
                    self.after = raw(self.store, self.job_id)
                    return
                last = events[-1][0] if events else last
            raise AssertionError("the job reported no progress")
        except BaseException as error:  # reported by the test, in its own thread
            self.error = error


@pytest.mark.parametrize("takeover", ["claimed", "finished"])
def test_a_training_run_whose_job_another_run_took_stops_and_writes_nothing(
    store: JobStore,
    data_dir: Path,
    tmp_path: Path,
    takeover: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real run of 20 epochs loses its job after its first epoch: it stops at its next write
    (its heartbeat every 0.2 s, its progress report at the epoch's end), appends no event
    after the other run's, leaves the record's fields as the other run left them, and
    publishes nothing."""
    from training.job import run_job
    from training.settings import WorkerSettings

    job_id = f"lost-{takeover}"
    settings = WorkerSettings(
        redis_url="redis://unused",
        data_dir=data_dir,
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        download=False,
        heartbeat_interval_s=0.2,
    )
    spec = JobSpec(
        model="mnist_mlp",
        publish_as="m",
        epochs=20,
        batch_size=32,
        max_train_examples=1200,
        max_test_examples=64,
        validation_split=32,
    )
    store.create(spec.model_dump(mode="json"), job_id)
    watcher = TakeOver(store, job_id, TAKEOVERS[takeover])
    watcher.start()
    with caplog.at_level("WARNING", logger="training"):
        result = run_job(job_id, store, settings, worker=RUN)
    watcher.join(130)
    assert watcher.error is None, watcher.error
    assert watcher.after is not None
    assert result is None
    hash_after, events_after = raw(store, job_id)
    assert (hash_after, events_after) == watcher.after  # not a field, not an event more
    record = store.get(job_id)
    assert record is not None and record["worker"] == OTHER
    assert record["progress"]["epoch"] == 1 and record["progress"]["epochs"] == 20
    if takeover == "finished":
        assert record["status"] == "succeeded" and record["result"] == RESULT
        assert events_after[-1][1]["type"] == "status"  # the terminal event is the last
    else:
        assert record["status"] == "running" and record["heartbeat_at"] < store.now() - 500
    assert not (settings.model_dir / "m").exists()  # nothing published
    assert not list(settings.model_dir.glob(".tmp-*"))  # its export, if any, removed
    assert 1 <= epochs_trained(settings.var_dir / "tensorboard" / job_id) <= 4  # of 20
    messages = [r.getMessage() for r in caplog.records]
    assert f"job {job_id}: another run owns it now; this one published nothing" in messages
