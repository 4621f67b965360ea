"""Where checkpoints lie and who removes them (training/checkpoint_files.py, the reaper's sweep):
on real Redis and real files. A write killed midway is never taken as a checkpoint; a reaper
removes the checkpoints of ended jobs, never those of live ones, and only checkpoints; a
checkpoint that cannot be written turns checkpoints off for the run, with one note."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl.jobs import JobStatus, JobStore, new_job_id
from tests.training.checkpoint_jobs import checkpoint_store, notes, tiny_fit
from training import checkpoint_files
from training.settings import WorkerSettings


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from checkpoint_store(redis_url)


def _complete(root: Path, job_id: str, epoch: int) -> Path:
    """A checkpoint folder of ``job_id`` as a finished write leaves it (its contents are not
    read here)."""
    return checkpoint_files.write(
        root, job_id, epoch, lambda f: (f / "state.json").write_text("{}")
    )


def _age(folder: Path, seconds: float) -> None:
    for path in (*folder.iterdir(), folder):
        stat = path.stat()
        os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def _reaper_settings(tmp_path: Path, checkpoints: Path, name: str) -> WorkerSettings:
    """A worker's settings for a reaper pass over ``checkpoints``, on a queue of the test's."""
    return WorkerSettings(
        redis_url="redis://unused",
        model_dir=tmp_path / "models",
        var_dir=tmp_path / "var",
        checkpoint_dir=checkpoints,
        training_queue=f"fdl-tests-resume-{name}-{os.getpid()}",
    )


def test_the_reaper_removes_the_checkpoints_of_ended_jobs_only(
    store: JobStore, tmp_path: Path
) -> None:
    """One reaper pass: the checkpoints of a job cancelled while queued, of one that ended and of
    one whose record is gone are removed; a queued and a running job keep theirs, and lose only
    a temporary folder older than STALE_TEMP_S (a write that died), not a fresh one. Before, no
    checkpoint was ever removed but by its own run's end."""
    from training.reaper import reap_once

    root = tmp_path / "checkpoints"
    settings = _reaper_settings(tmp_path, root, "reaper")
    ids = {name: new_job_id() for name in ("queued", "running", "cancelled", "ended", "gone")}
    for name, job_id in ids.items():
        if name != "gone":
            store.create({"model": "mnist_logreg"}, job_id, settings.training_queue)
        if name in ("running", "ended"):
            assert store.mark_running(job_id, "celery@resume:1")
        _complete(root, job_id, 2)
    assert store.request_cancel(ids["cancelled"]) is not None
    assert store.finish(ids["ended"], JobStatus.FAILED, error="ended by the test")
    old, fresh = (
        root / ids["queued"] / ".tmp-epoch-0003-aaaaaaaaaaaa",
        root / ids["running"] / ".tmp-epoch-0003-bbbbbbbbbbbb",
    )
    for temp in (old, fresh):
        temp.mkdir()
        (temp / "state.json").write_text("{}")
    _age(old, checkpoint_files.STALE_TEMP_S + 60)
    reap_once(store, settings, lambda *_: None, sweep_leftovers=False)
    left = sorted(path.name for path in root.iterdir() if path.is_dir())  # not .clock
    assert left == sorted([ids["queued"], ids["running"]]), left
    assert checkpoint_files.last_epoch(root, ids["queued"]) == 2 and not old.exists()
    assert checkpoint_files.last_epoch(root, ids["running"]) == 2 and fresh.exists()


# A writer of a checkpoint after epoch 3 that stops once its files are in, before the rename: a
# process of its own (a fork of this one, whose threads may hold locks, can hang).
WRITER = """
import sys
from pathlib import Path
from training.checkpoint_files import write

def fill(folder):
    (folder / "state.json").write_text('{"epoch": 3}')
    (folder / "weights.weights.h5").write_bytes(bytes(4096))
    print("written", flush=True)
    sys.stdin.read()  # killed here

write(Path(sys.argv[1]), sys.argv[2], 3, fill)
"""


def _killed_mid_write(root: Path, job_id: str) -> None:
    """SIGKILL a writer of a checkpoint of ``job_id`` once every file of it is in."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), job_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        assert select.select([child.stdout], [], [], 60)[0], "the write never started"
        assert child.stdout.readline() == b"written\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def test_a_write_killed_midway_is_never_taken_and_is_removed(
    store: JobStore, tmp_path: Path
) -> None:
    """A writer SIGKILLed with every file of its checkpoint after epoch 3 written, before the
    rename: the job's newest checkpoint is still epoch 2's (what a run resumes from, what a
    hand-back names); the half folder is removed by a reaper once stale, and at once by the next
    run of the job (training/checkpoints.py: its run owns the job)."""
    root = tmp_path / "checkpoints"
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, "celery@resume:2")
    _complete(root, job_id, 2)
    _killed_mid_write(root, job_id)
    temps = [p for p in (root / job_id).iterdir() if p.name.startswith(".tmp-")]
    assert len(temps) == 1 and (temps[0] / "state.json").exists(), temps
    assert checkpoint_files.last_epoch(root, job_id) == 2
    assert checkpoint_files.sweep(store, root) == [] and temps[0].exists()  # fresh: kept
    _age(temps[0], checkpoint_files.STALE_TEMP_S + 60)
    assert checkpoint_files.sweep(store, root) == [] and not temps[0].exists()
    assert checkpoint_files.last_epoch(root, job_id) == 2
    _killed_mid_write(root, job_id)
    assert checkpoint_files.remove_temps(root / job_id) != []  # as a run starting removes them
    assert [p.name[:11] for p in (root / job_id).iterdir()] == ["epoch-0002-"]
    shutil.rmtree(root)


def test_a_checkpoint_dir_that_cannot_be_used_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    """FDL_CHECKPOINT_DIR is prepared at start as FDL_VAR_DIR is: a file in its place stops the
    worker in one line (exit 1) instead of every job's checkpoints failing one by one."""
    from tests.training.test_worker_settings import run_worker

    taken = tmp_path / "checkpoints"
    taken.write_text("")
    result = run_worker(tmp_path, FDL_CHECKPOINT_DIR=str(taken))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"fdl-worker: FDL_CHECKPOINT_DIR: {taken} exists and is not a folder\n"


def test_a_checkpoint_that_cannot_be_written_is_noted_once_and_training_goes_on(
    store: JobStore, tmp_path: Path
) -> None:
    """A checkpoint folder that cannot be made (a file in its place, as a full or read-only disk
    refuses it): the first write's failure turns checkpoints off for the run with one note in the
    job's events, and ``fit`` trains its epochs. Without the guard the first epoch's end raised
    and the job failed."""
    blocked = tmp_path / "checkpoints"
    blocked.write_text("")
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    progress, checkpoints = tiny_fit(store, job_id, blocked)
    assert [entry["epoch"] for entry in progress.history] == [1, 2, 3]
    written = notes(store, job_id)
    assert len(written) == 1 and written[0].startswith("checkpoints are off for the rest of this")
    assert checkpoints.failed is not None and blocked.is_file()


def test_a_checkpoint_dir_shared_with_other_folders_loses_none_of_them(
    store: JobStore, tmp_path: Path
) -> None:
    """FDL_CHECKPOINT_DIR set to a folder that holds others' folders (the worker refuses its own
    var folder, data or model repository there, tests/training/test_worker_settings.py, but not
    another program's: another deployment's models, a cache), named as a job id may be and with
    no record. A reaper pass and a run's end remove only checkpoints. Before, the reaper's pass
    removed such folders whole."""
    from training.reaper import reap_once
    from training.run_end import end_run

    var = tmp_path / "shared"
    version = var / "models" / "mnist" / "1" / "saved_model.pb"
    version.parent.mkdir(parents=True)
    version.write_text("a published version")
    (var / "cache" / "datasets").mkdir(parents=True)
    ended, lone = new_job_id(), new_job_id()
    _complete(var, ended, 2)
    (var / lone).mkdir()  # a folder of another's, empty, named as a job id
    (var / ended / "notes.txt").write_text("not a checkpoint")  # another's file in a job's
    settings = _reaper_settings(tmp_path, var, "shared")
    reap_once(store, settings, lambda *_: None, sweep_leftovers=False)
    assert version.read_text() == "a published version"
    assert (var / "cache" / "datasets").is_dir() and (var / lone).is_dir()
    assert checkpoint_files.last_epoch(var, ended) is None  # its checkpoint went
    assert [p.name for p in (var / ended).iterdir()] == ["notes.txt"]
    _complete(var, ended, 3)
    store.create({"model": "mnist_logreg"}, ended)
    assert store.mark_running(ended, "celery@resume:3")
    end_run(ended, store, "celery@resume:3", JobStatus.FAILED, None, "test", checkpoints=var)
    assert [p.name for p in (var / ended).iterdir()] == ["notes.txt"]


def test_a_fresh_temporary_folder_survives_a_reaper_whose_clock_runs_ahead(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running job's checkpoint being written (a fresh temporary folder) and a reaper on a
    host whose clock runs an hour ahead of the shared storage's (NFS: file times are the
    server's): the folder is kept, its age read on the storage's clock; one truly stale is
    removed. Before, the reaper's own clock made every write in progress look an hour old, and
    removing it under its writer turned the run's checkpoints off (or renamed a half folder in)."""
    root = tmp_path / "checkpoints"
    job_id = new_job_id()
    store.create({"model": "mnist_logreg"}, job_id)
    assert store.mark_running(job_id, "celery@resume:4")
    _complete(root, job_id, 2)
    fresh, stale = root / job_id / ".tmp-epoch-0003-aaaaaaaaaaaa", root / job_id / ".tmp-x"
    for temp in (fresh, stale):
        temp.mkdir()
        (temp / "state.json").write_text("{}")
    _age(stale, checkpoint_files.STALE_TEMP_S + 60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert checkpoint_files.sweep(store, root) == []
    assert fresh.exists() and not stale.exists()
    assert checkpoint_files.last_epoch(root, job_id) == 2
