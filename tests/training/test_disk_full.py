"""A model repository (FDL_MODEL_DIR) that fills up while a job writes its version: the job
fails at once (no retry), publishes nothing, leaves no export behind, and its error says what
to do: ``the model repository (FDL_MODEL_DIR) is full: no space left on device while writing
<the file, or the SavedModel>; free space and submit the job again``. Before, the job's error
was a bare ``OSError: [Errno 28] No space left on device`` (the config's write after the
rename) or TensorFlow's ``ResourceExhaustedError: {{function_node __wrapped__SaveV2…}}``.

Real Redis, real TensorFlow, the real job function; the repository is a real tmpfs, filled by
the test (a thread of the test holds the repository's real lock while it fills it, so the job
meets a full disk just after the rename)."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fdl.files import atomic_write
from fdl.jobs import JobStore
from fdl.repository import CONFIG_FILE
from fdl.repository_reads import list_versions
from harness.disks import small_tmpfs
from harness.redis import redis_running
from tests.training.lock_wait import SETTINGS, TINY, LockHolder, staged, waits
from tests.training.test_full_disks import fill

PAGE = 4096  # what a small file takes on a tmpfs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[JobStore]:
    with redis_running(tmp_path_factory.mktemp("redis"), logs_dir, "redis-disk-full") as url:
        yield JobStore.from_url(url)


def full(writing: str) -> str:
    """A job's error for a full model repository, the worker's folders shown by their settings
    (training/error_paths.py): its path is not in the record."""
    return (
        "the model repository (FDL_MODEL_DIR) is full: no space left on device "
        f"while writing {writing}; free space and submit the job again"
    )


def assert_nothing_left(model_dir: Path, job_id: str, record: dict[str, Any]) -> None:
    assert record["status"] == "failed", record
    assert int(record["attempts"]) == 1, record
    assert list_versions(model_dir / "m") == []
    assert staged(model_dir, job_id) == []
    assert not list(model_dir.rglob("*.tmp")), list(model_dir.rglob("*"))


def test_a_full_disk_while_tensorflow_writes_the_variables(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """Full before the job: TensorFlow's first write of the export (SaveV2, the variables)."""
    with small_tmpfs(tmp_path / "models", "1m") as model_dir:
        fill(model_dir)
        result, record, _ = job_in_process(store, "variables", data_dir, **TINY)
        assert result is None
        assert record["error"] == full("the SavedModel"), record["error"]
        assert_nothing_left(model_dir, "variables", record)


def test_a_full_disk_when_the_config_is_written_after_the_rename(
    store: JobStore, data_dir: Path, tmp_path: Path, job_in_process: Callable[..., Any]
) -> None:
    """The export fits; while the job waits for the repository's lock, another writer takes all
    the space but a page, which ``.versions.json`` takes: the config's write after the rename
    fails, and the version is taken back out."""
    job_id = "config"
    with small_tmpfs(tmp_path / "models", "4m") as model_dir:

        def fill_once_waiting() -> bool:
            if not waits(store, job_id):
                return False
            fill(model_dir, PAGE)
            return True

        with LockHolder(model_dir, fill_once_waiting) as holder:
            result, record, _ = job_in_process(store, job_id, data_dir, SETTINGS, **TINY)
        assert holder.error is None, (holder.error, record)
        assert result is None
        assert record["error"] == full(f"$FDL_MODEL_DIR/{CONFIG_FILE}"), record["error"]
        assert_nothing_left(model_dir, job_id, record)


def test_atomic_write_names_the_file_a_full_disk_refused(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        path = disk / "models.config"
        with pytest.raises(OSError) as raised:
            atomic_write(path, "model_config_list {}\n")
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename == str(path)
        assert str(raised.value) == f"[Errno 28] No space left on device: '{path}'"
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no temporary file left
