"""A job's TensorBoard folder (``<FDL_VAR_DIR>/tensorboard/<job id>``) goes with its record once
the reaper prunes it (``FDL_JOB_RETENTION_S`` after the job ended): before, every job ever run,
cancelled ones too, left its folder for good. The hourly sweep removes, from a worker's own
``FDL_VAR_DIR``, the old folders of jobs whose records are gone (pruned by another worker: each
Kubernetes pod has a var folder of its own). A job with a record keeps its folder, a running one
whatever its folder's age, and nothing outside ``tensorboard/`` is ever removed.

Real Redis, real files, the reaper's own pass (no worker: no TensorFlow involved)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl.jobs import JobStatus, JobStore
from tests.training.stores import store_on_db
from tests.unprivileged import closed, unprivileged
from training.reaper import reap_once, remove_tensorboard_dirs
from training.settings import WorkerSettings

DB = 9
DAY = 86400.0


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def _sent(job_id: str, queue: str, max_duration_s: float | None = None) -> None:
    raise AssertionError(f"nothing is sent here ({job_id})")


def _settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        job_retention_s=30 * DAY,
    )


def _logs(var_dir: Path, name: str, age_days: float = 0.0) -> Path:
    """A job's TensorBoard folder as Keras leaves it (``train/`` and ``validation/`` event
    files), everything in it last written ``age_days`` ago."""
    folder = var_dir / "tensorboard" / name
    stamp = time.time() - age_days * DAY
    for part in ("train", "validation"):
        events = folder / part / "events.out.tfevents.1.host.1.v2"
        events.parent.mkdir(parents=True)
        events.write_bytes(b"\0" * 64)
        os.utime(events, (stamp, stamp))
        os.utime(events.parent, (stamp, stamp))
    os.utime(folder, (stamp, stamp))
    return folder


def _ended_long_ago(store: JobStore, job_id: str, status: JobStatus) -> None:
    store.create({"model": "mnist_logreg"}, job_id, "training")
    store.set_fields(job_id, created_at=time.time() - 40 * DAY)
    store.redis.zadd("fdl:jobs", {job_id: time.time() - 40 * DAY})
    store.mark_running(job_id, "some-worker:1")
    store.finish(job_id, status, error=None if status is JobStatus.SUCCEEDED else "x")
    store.set_fields(job_id, finished_at=time.time() - 31 * DAY)


def test_a_pruned_jobs_tensorboard_folder_goes_with_its_record(
    store: JobStore, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    var = settings.var_dir
    _ended_long_ago(store, "old-done", JobStatus.SUCCEEDED)
    _ended_long_ago(store, "old-cancelled", JobStatus.CANCELLED)
    store.create({"model": "mnist_logreg"}, "recent-done", "training")
    store.finish("recent-done", JobStatus.SUCCEEDED, result={})
    store.create({"model": "mnist_logreg"}, "running", "training")
    store.mark_running("running", "another-worker:7")
    store.set_fields("running", heartbeat_at=time.time())
    for name in ("old-done", "old-cancelled", "recent-done", "running"):
        _logs(var, name)
    actions = reap_once(store, settings, _sent, sweep_leftovers=False)
    assert sorted(actions) == [("old-cancelled", "pruned"), ("old-done", "pruned")]
    assert store.get("old-done") is None and store.get("old-cancelled") is None
    assert sorted(p.name for p in (var / "tensorboard").iterdir()) == ["recent-done", "running"]
    # The reaper thread's first pass sweeps too: no record gone, nothing more goes.
    assert reap_once(store, settings, _sent) == []
    assert sorted(p.name for p in (var / "tensorboard").iterdir()) == ["recent-done", "running"]


def test_the_sweep_removes_old_folders_of_jobs_without_records_only(
    store: JobStore, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    var = settings.var_dir
    # Pruned by another worker (or before the prune removed folders), last written long ago.
    _logs(var, "pruned-elsewhere", age_days=31)
    # No record, but written recently (its record lost with Redis's data, its run going on).
    _logs(var, "recent-no-record", age_days=1)
    # Records that are there keep their folders, however old: running on another worker, ended
    # within the retention.
    for job_id in ("running-elsewhere", "ended"):
        store.create({"model": "mnist_logreg"}, job_id, "training")
        store.mark_running(job_id, "another-worker:7")
        store.set_fields(job_id, heartbeat_at=time.time())
        _logs(var, job_id, age_days=40)
    store.finish("ended", JobStatus.FAILED, error="x")
    # Not a job id's folder, a link in a job's place: left alone, and what the link names too.
    _logs(var, "notes.d", age_days=40)
    outside = _logs(tmp_path, "outside", age_days=40)
    (var / "tensorboard" / "linked").symlink_to(outside, target_is_directory=True)
    assert reap_once(store, settings, _sent) == []
    left = sorted(p.name for p in (var / "tensorboard").iterdir())
    assert left == ["ended", "linked", "notes.d", "recent-no-record", "running-elsewhere"]
    assert (outside / "train").is_dir()
    # Without the sweep (the reaper thread runs it hourly) the removal waits for it.
    _logs(var, "pruned-later", age_days=31)
    reap_once(store, settings, _sent, sweep_leftovers=False)
    assert (var / "tensorboard" / "pruned-later").is_dir()


def test_an_id_that_is_no_plain_name_removes_nothing(tmp_path: Path) -> None:
    var = tmp_path / "var"
    kept = _logs(var, "job")
    (var / "models").mkdir()
    ids = ["..", ".", "../models", "job/train", "", "/", str(var / "tensorboard" / "job")]
    assert remove_tensorboard_dirs(var, ids) == []
    assert (kept / "train").is_dir() and (var / "models").is_dir()
    assert remove_tensorboard_dirs(var, ["job", "never-ran"]) == ["job"]
    assert not kept.exists()


def test_a_tensorboard_folder_it_may_not_enter_is_a_warning(tmp_path: Path) -> None:
    """``var/tensorboard`` closed to the worker (made by another user): the prune logs one
    warning per job and goes on; before, ``PermissionError`` ended the reaper's pass (after the
    records were gone, so those folders were never removed)."""
    (tmp_path / "tensorboard" / "job-1").mkdir(parents=True)
    script = (
        "import logging, sys; from pathlib import Path; "
        "from training.reaper import remove_tensorboard_dirs; "
        "logging.basicConfig(level=logging.WARNING); "
        "print(remove_tensorboard_dirs(Path(sys.argv[1]), ['job-1', 'job-2']))"
    )
    with closed(tmp_path / "tensorboard"):
        result = subprocess.run(
            [*unprivileged(), sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parents[2],
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert "cannot remove the TensorBoard logs of job job-1" in result.stderr
    assert (tmp_path / "tensorboard" / "job-1").is_dir()
