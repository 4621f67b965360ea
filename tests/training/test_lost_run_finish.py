"""A run that lost its job (another run claimed or finished it, or a reaper queued it again,
while this one went unheard) does not end it either: its end carries the worker name it claimed
the job under, and the record refuses it unless it still runs under that name. Before, a run
whose quality gate said no, or that stopped on an error or a cancellation, had nothing of its
own to write before its end, and that end (no run check) ended the other run's running job, or
the queued one, with this run's outcome. Ends of no run (the gateway's, a reaper's) apply as
before, and a retry of a run's end whose reply was lost still answers that it applied.

The lost run meets the takeover inside a read of the run itself: a named pipe in its way (the
served version's metadata that the quality gate reads, an image of its dataset) holds the read
until the test has taken the job from it. Real Redis, real TensorFlow, real files."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fdl import contract
from fdl.job_records import EVENTS_KEY, JOB_KEY
from fdl.job_scripts import TRANSITION_SCRIPT
from fdl.jobs import JobStatus, JobStore, NotThisRun
from fdl.jobspec import JobSpec, PublishSpec
from harness.procs import wait_for
from tests.redis_fault_proxy import RedisFaultProxy, Rule
from tests.training.stores import loaded_store
from tests.training.test_lost_run_writes import (
    OTHER,
    RESULT,
    RUN,
    TAKEOVERS,
    claimed_by_other,
    raw,
    running_job,
)
from training.settings import WorkerSettings

DB = 12
LOST = "another run owns it now; this one published nothing"
SERVED = {"job_id": "an-earlier-job", "metrics": {"test_accuracy": 1.0}}  # version 1's metadata


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    with loaded_store(redis_url, DB) as direct:
        yield direct


ENDS: list[tuple[JobStatus, dict[str, Any]]] = [
    (JobStatus.SUCCEEDED, {"result": {"model": "m", "version": None, "published": False}}),
    (JobStatus.FAILED, {"error": "DataMissingError: no data"}),
    (JobStatus.CANCELLED, {"error": "cancelled by request"}),
]


@pytest.mark.parametrize("takeover", sorted(TAKEOVERS))
def test_a_runs_end_applies_only_while_the_record_runs_under_its_name(
    store: JobStore, takeover: str
) -> None:
    job_id = running_job(store)
    TAKEOVERS[takeover](store, job_id)
    before = raw(store, job_id)
    for status, fields in ENDS:
        with pytest.raises(NotThisRun):
            store.finish(job_id, status, run=RUN, **fields)
        assert raw(store, job_id) == before  # not a field, not an event
    if takeover == "finished":  # a terminal status stays, whoever ends it
        assert not store.finish(job_id, JobStatus.FAILED, error="late")
        assert raw(store, job_id) == before
        return
    if takeover == "claimed":  # the run that has it now ends it
        assert store.finish(job_id, JobStatus.SUCCEEDED, result=RESULT, run=OTHER)
        expected = "succeeded"
    else:  # an end of no run (the gateway's) applies
        assert store.finish(job_id, JobStatus.FAILED, error="not queued")
        expected = "failed"
    record = store.get(job_id)
    assert record is not None and record["status"] == expected


def test_a_retried_end_whose_reply_was_lost_answers_applied(store: JobStore) -> None:
    """The run's end of its own job applied, its reply was lost (a proxy drops it and the
    connection) and the store retries it: the record no longer runs under the run's name (it
    ended), yet the retry finds its token and answers applied, with one terminal event."""
    job_id = running_job(store)
    kwargs = store.redis.connection_pool.connection_kwargs
    lost = Rule(b"EVALSHA", "lose_reply", 1)
    with RedisFaultProxy((kwargs["host"], kwargs["port"]), lost) as proxy:
        worker_store = JobStore.from_url(proxy.url(DB), retry_for_s=10)
        try:
            assert worker_store.finish(job_id, JobStatus.SUCCEEDED, result=RESULT, run=RUN)
        finally:
            worker_store.redis.close()
        assert lost.fired == 1
    kinds = [(e["type"], e["data"]["status"]) for _, e in store.read_events(job_id)]
    assert kinds == [("status", "queued"), ("status", "running"), ("status", "succeeded")]
    assert store.get(job_id)["result"] == RESULT  # type: ignore[index]
    assert store.finish("gone", JobStatus.FAILED, error="late", run=RUN) is False  # no record


def test_a_replayed_end_answers_as_its_first_try_did(store: JobStore) -> None:
    """The script's replay rule, without a proxy: a replay of the run's end that applied answers
    1 although the job no longer runs under the run (it ended), writing nothing; one that was
    refused, the job being another run's, is refused again."""
    script = store.redis.register_script(TRANSITION_SCRIPT)
    for job_id, first in (("applied", 1), ("refused", -1)):
        running_job(store, job_id)
        if first < 0:
            claimed_by_other(store, job_id)
        keys = [JOB_KEY.format(job_id), EVENTS_KEY.format(job_id)]
        event = json.dumps({"status": "failed", "error": "boom"})
        args = [json.dumps(uuid.uuid4().hex), event, str(time.time()), RUN, "status", '"failed"']
        assert script(keys=keys, args=args) == first
        store.set_fields(job_id, note="a gateway's write")  # no status change in between
        after = raw(store, job_id)
        assert script(keys=keys, args=args) == first
        assert raw(store, job_id) == after


def png(size: tuple[int, int] = (28, 28), claimed: tuple[int, int] | None = None) -> bytes:
    """A grey PNG; ``claimed``: the size its header says instead (a decompression bomb, which
    Pillow refuses to open with an error of its own, not an OSError)."""
    out = io.BytesIO()
    Image.new("L", size, 128).save(out, "PNG")
    data = out.getvalue()
    if claimed is None:
        return data
    body = b"IHDR" + struct.pack(">II", *claimed) + data[24:29]
    return data[:12] + body + struct.pack(">I", zlib.crc32(body)) + data[33:]


def pipe_writer(pipe: Path, timeout: float = 120) -> int:
    """The write end of the named pipe ``pipe`` once the run has opened it to read (its read
    waits until then), blocking."""

    def attempt() -> list[int] | None:
        try:
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no reader yet
                return None
            raise
        os.set_blocking(fd, True)
        return [fd]

    return wait_for(attempt, timeout, f"the run to read {pipe}", interval=0.02)[0]


# A pipe the run reads, what it gets, what comes first (None: nothing), what takes the job.
Step = tuple[Path, bytes, Callable[[], object] | None, Callable[[], None] | None]


class Feeder(threading.Thread):
    """Answers the run's reads of named pipes: for each step (pipe, payload, before, take) it
    waits for ``before`` (None: nothing), then for the run to read the pipe; while the run waits
    there, ``take`` (None: nothing) takes the job from it, and the record is kept as it was just
    after; then the payload is written. A failing step still ends the run's read (its writer is
    closed), and once failed it answers any later read with nothing until ``done``."""

    def __init__(self, store: JobStore, job_id: str, steps: list[Step]) -> None:
        super().__init__(name="feeder", daemon=True)
        self.store, self.job_id, self.steps = store, job_id, steps
        self.after: tuple[dict[str, str], list[Any]] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for pipe, payload, before, take in self.steps:
                if before is not None:
                    wait_for(before, 120, "the run's step before the read")
                fd = pipe_writer(pipe)
                try:
                    if take is not None:
                        take()
                        self.after = raw(self.store, self.job_id)
                    os.write(fd, payload)
                finally:
                    os.close(fd)
        except BaseException as error:  # reported by the test, in its own thread
            self.error = error
            while not self.done.wait(0.05):  # never leave the run waiting in a read
                for pipe, *_ in self.steps:
                    with contextlib.suppress(OSError):  # no reader now
                        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))


def tiny_dataset(root: Path, piped: bool = True) -> Path:
    """An image-folder dataset of two classes; ``piped``: its first image is a named pipe."""
    for split, count in (("train", 6), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for index in range(int(piped and (split, cls) == ("train", "a")), count):
                (root / split / cls / f"{index}.png").write_bytes(png())
    if piped:
        os.mkfifo(root / "train" / "a" / "0.png")
    return root / "train" / "a" / "0.png"


def tiny_spec(publish: PublishSpec | None = None) -> JobSpec:
    """A job that trains on the tiny dataset and publishes as ``m``."""
    gate = publish or PublishSpec()
    return JobSpec(
        model="mnist_mlp", dataset="tiny", publish_as="m", validation_split=0, publish=gate
    )


def logged(job_id: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"job {job_id}")]


PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's default bomb limit
# How the lost run stops once the job was taken from it inside its data's read: the image it
# waits for (the pipe's payload), whether a cancellation is requested meanwhile (the gateway's),
# and what its log says of the stop (None: nothing).
STOPS: dict[str, tuple[bytes, bool, str | None]] = {
    "data_missing": (b"not an image", False, "failed: cannot read image"),  # DataMissingError
    # Pillow's DecompressionBombError, which the folder loader reports as unreadable data too.
    "error": (png(claimed=(30_000, 30_000)), False, "decompression bomb"),
    "cancelled": (png(), True, None),  # Cancelled, at the check after loading
}
CASES = [(stop, takeover) for stop in sorted(STOPS) for takeover in sorted(TAKEOVERS)]
# A cancel request leaves a finished job alone (the run would train on, and stop at its report).
CASES.remove(("cancelled", "finished"))


def run_lost(
    store: JobStore, tmp_path: Path, job_id: str, spec: JobSpec, steps: list[Step]
) -> tuple[Feeder, dict[str, Any] | None, WorkerSettings]:
    """``run_job`` as the run named RUN, its pipes answered by a :class:`Feeder` of ``steps``."""
    from training.job import run_job

    settings = WorkerSettings(
        redis_url="redis://unused",
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        download=False,
        heartbeat_interval_s=600,  # no beat during the run: only its end meets the takeover
        stale_after_s=3600,  # several beats long, as FDL_STALE_AFTER_S must be
    )
    store.create(spec.model_dump(mode="json"), job_id)
    feeder = Feeder(store, job_id, steps)
    feeder.start()
    try:
        result = run_job(job_id, store, settings, worker=RUN)
    finally:
        feeder.done.set()
    feeder.join(30)
    assert not feeder.is_alive(), "the run never read what the feeder waited for"
    assert feeder.error is None, feeder.error
    return feeder, result, settings


@pytest.mark.parametrize(("stop", "takeover"), CASES)
def test_a_run_that_stops_after_another_run_took_its_job_leaves_the_record_alone(
    store: JobStore,
    tmp_path: Path,
    stop: str,
    takeover: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pillow's own bomb limit, whatever an in-process gateway test of this session set it to:
    # the "error" stop is the DecompressionBombError it raises at open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_MAX_IMAGE_PIXELS)
    job_id = f"{stop}-{takeover}"
    pipe = tiny_dataset(tmp_path / "data" / "tiny")
    payload, cancel, says = STOPS[stop]

    def take() -> None:
        TAKEOVERS[takeover](store, job_id)
        if cancel:
            assert store.request_cancel(job_id) is not None

    spec = tiny_spec()
    with caplog.at_level("WARNING", logger="training"):
        feeder, result, settings = run_lost(
            store, tmp_path, job_id, spec, [(pipe, payload, None, take)]
        )
    assert result is None
    assert feeder.after is not None and raw(store, job_id) == feeder.after
    assert not settings.model_dir.exists() or not any(settings.model_dir.iterdir())
    assert f"job {job_id}: {LOST}" in logged(job_id, caplog)
    assert says is None or says in caplog.text  # it stopped as meant, not for another reason


@pytest.mark.parametrize("takeover", sorted(TAKEOVERS))
def test_a_run_whose_gate_says_no_after_another_run_took_its_job_leaves_the_record_alone(
    store: JobStore, tmp_path: Path, takeover: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The run trains, and its quality gate (``only_if_better``) reads the served version's
    metadata: the job is taken from it there; the gate says no (1.0 is not beaten), and the
    run, with nothing left to write but its end, ends nothing."""
    job_id = f"gate-{takeover}"
    tiny_dataset(tmp_path / "data" / "tiny", piped=False)
    metadata = tmp_path / "models" / "m" / "1" / contract.METADATA_FILE
    metadata.parent.mkdir(parents=True)
    (metadata.parents[1] / "saved_model.pb").write_bytes(b"graph")  # a version: it holds a graph
    os.mkfifo(metadata)
    meta = json.dumps(SERVED).encode()

    def loading() -> bool:  # the run is past its look for a version it published before
        return any(e["type"] == "log" for _, e in store.read_events(job_id))

    # That look (published_before) reads metadata bounded and passes over a pipe unopened;
    # the quality gate's read of the served version's metadata is the one held.
    steps: list[Step] = [(metadata, meta, loading, lambda: TAKEOVERS[takeover](store, job_id))]
    spec = tiny_spec(PublishSpec(only_if_better=True))
    with caplog.at_level("WARNING", logger="training"):
        feeder, result, settings = run_lost(store, tmp_path, job_id, spec, steps)
    assert result is None
    assert feeder.after is not None and raw(store, job_id) == feeder.after
    assert sorted(p.name for p in settings.model_dir.iterdir()) == ["m"]
    assert sorted(p.name for p in (settings.model_dir / "m").iterdir()) == ["1"]  # nothing new
    assert f"job {job_id}: {LOST}" in logged(job_id, caplog)
