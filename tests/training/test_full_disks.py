"""Full disks around a training run, each a real tmpfs that fills up.

TensorBoard's logs (``FDL_VAR_DIR/tensorboard``) are a run's by-product: a disk that is full
when the run starts, or fills up while it trains, turns TensorBoard logging off for that run
with one note (a warning and a ``log`` event), and the job trains on and publishes. Before, the
writer's ``No space left on device`` failed the job, hours of training lost for its logs; and a
failed flush left the failed writer the pool process's default, so the next job in that process
failed too. A report file that does not fit beside the model names itself in the job's error;
before, it was a bare ``[Errno 28] No space left on device``."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fdl.jobs import JobStore
from harness.disks import small_tmpfs
from harness.redis import redis_running
from tests.training.spec_runs import run_spec, settings_for

SPEC = {
    "model": "mnist_mlp",
    "epochs": 4,
    "batch_size": 32,
    "max_train_examples": 600,
    "max_test_examples": 64,
    "validation_split": 32,
    "publish_as": "m",
}
NOTE = "TensorBoard logging is off for the rest of this run: "


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[JobStore]:
    with redis_running(tmp_path_factory.mktemp("redis"), logs_dir, "redis-full-disks") as url:
        yield JobStore.from_url(url)


def fill(disk: Path, leave: int = 0) -> None:
    """Take the file system's free space but ``leave`` bytes, as another writer would."""
    stat = os.statvfs(disk)
    with open(disk / "filler", "wb") as filler:
        try:
            filler.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
            filler.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


def notes(store: JobStore, job_id: str) -> list[str]:
    return [
        event["data"]["message"]
        for _, event in store.read_events(job_id, count=10_000)
        if event["type"] == "log" and event["data"]["message"].startswith(NOTE)
    ]


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_a_full_tensorboard_disk_turns_its_logging_off_and_the_job_publishes(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(data_dir, tmp_path)
    with small_tmpfs(settings.var_dir / "tensorboard", "256k") as disk:
        fill(disk)
        result, record = run_spec(store, "full-from-start", settings, **SPEC)
    assert record["status"] == "succeeded", record
    assert result is not None and result["published"] is True and result["version"] == 1
    [note] = notes(store, "full-from-start")
    assert "No space left on device" in note and "full-from-start" in note, note


def test_a_tensorboard_disk_that_fills_up_while_training_turns_its_logging_off(
    store: JobStore, data_dir: Path, tmp_path: Path
) -> None:
    """The disk fills up once the run's event files exist (its training and validation writers,
    after its first epoch): the flushes after fail. A second job in the same process then logs
    to TensorBoard as usual."""
    settings = settings_for(data_dir, tmp_path / "first")
    with small_tmpfs(settings.var_dir / "tensorboard", "1m") as disk:
        filled = threading.Event()

        def fill_once_logging_began() -> None:
            while not filled.is_set():
                if len(event_files(disk)) == 2:
                    fill(disk)
                    filled.set()
                filled.wait(0.01)

        filler = threading.Thread(target=fill_once_logging_began, daemon=True)
        filler.start()
        try:
            _, record = run_spec(store, "fills-up", settings, **SPEC)
        finally:
            filled.set()
            filler.join(10)
        began = event_files(disk)
    assert record["status"] == "succeeded", record
    assert record["result"]["published"] is True
    assert len(began) == 2, f"TensorBoard logging never began: {began}"
    [note] = notes(store, "fills-up")
    assert "No space left on device" in note, note

    later = settings_for(data_dir, tmp_path / "later")
    _, record = run_spec(store, "after-it", later, **SPEC)
    assert record["status"] == "succeeded", record
    assert notes(store, "after-it") == []
    logged = event_files(later.var_dir / "tensorboard" / "after-it")
    assert {path.parent.name for path in logged} == {"train", "validation"}
    assert all(path.stat().st_size > 1000 for path in logged), logged


@pytest.mark.parametrize(
    ("leave", "refused"), [(0, "evaluation.json"), (4096, "confusion_matrix.png")]
)
def test_a_report_file_that_does_not_fit_is_named_in_the_error(
    tmp_path: Path, leave: int, refused: str
) -> None:
    """``leave`` bytes free: evaluation.json (a page) fits in one, the confusion matrix's PNG
    does not."""
    from training.report import evaluation, write_report

    y_true = np.arange(64) % 10
    report = evaluation(y_true, y_true[::-1], [str(i) for i in range(10)], {
        "test_accuracy": 0.1, "test_loss": 2.3,
    })  # fmt: skip
    history = [{"epoch": 1, "loss": 2.3, "accuracy": 0.1}]
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        folder = disk / "assets.extra"
        folder.mkdir()
        fill(disk, leave)
        with pytest.raises(OSError) as raised:
            write_report(folder, report, history, "m (mnist_mlp)")
    error = raised.value
    assert error.errno == errno.ENOSPC
    assert error.filename == str(folder / refused)
    assert str(error) == f"[Errno 28] No space left on device: '{folder / refused}'"
