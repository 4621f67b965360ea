"""Version numbers and all-or-nothing publishes, with real files: a number once published is
never given to another version (deleted versions, a deleted model folder, a label left pointing
at a deleted version), and a publish that fails after its rename takes its version back out."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fdl import contract
from fdl.model_config import ConfigRenderError
from fdl.repository import CONFIG_FILE, Repository
from fdl.repository_reads import LABELS_FILE, NUMBERS_FILE, NumbersFileError, list_versions
from harness.disks import small_tmpfs
from training.publish import publish, staging_dir


def staged(model_dir: Path, model: str, job_id: str, size: int = 100) -> Path:
    """A staged export as the worker writes it, with the job id in its metadata."""
    folder = staging_dir(model_dir / model, job_id)
    (folder / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"x" * size)
    metadata = {"job_id": job_id, "metrics": {"test_accuracy": 0.9}}
    (folder / contract.METADATA_FILE).write_text(json.dumps(metadata))
    return folder


def test_a_deleted_versions_number_is_never_given_again(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    for job in ("a", "b"):
        publish(staged(model_dir, "m", job), model_dir, "m", job)
    # The newest version was bad and its folder was deleted by hand: the next job's version
    # must not come back as "2" (a label or a model server that knew the old 2 would take it
    # for that one).
    shutil.rmtree(model_dir / "m" / "2")
    assert publish(staged(model_dir, "m", "c"), model_dir, "m", "c") == (3, True)
    # A gap stays a gap.
    assert list_versions(model_dir / "m") == [1, 3]
    # The whole model folder was deleted: numbering goes on where it was.
    shutil.rmtree(model_dir / "m")
    assert publish(staged(model_dir, "m", "d"), model_dir, "m", "d") == (4, True)
    assert json.loads((model_dir / NUMBERS_FILE).read_text()) == {"m": 4}


def test_a_label_left_on_a_deleted_version_keeps_its_number(tmp_path: Path) -> None:
    """A repository from before the numbers were recorded: a label still naming a version whose
    folder is gone keeps that number taken, so the label never moves to an unvetted model."""
    model_dir = tmp_path / "models"
    (model_dir / "m" / "1").mkdir(parents=True)
    (model_dir / LABELS_FILE).write_text(json.dumps({"m": {"stable": 5}}))
    assert not (model_dir / NUMBERS_FILE).exists()
    assert publish(staged(model_dir, "m", "e"), model_dir, "m", "e") == (6, True)


@pytest.mark.parametrize("text", ["{not json", '["m", 4]', '{"m": "4"}', '{"m": true}'])
def test_an_unreadable_numbers_file_is_never_written_over(tmp_path: Path, text: str) -> None:
    """Rewriting it with the one model being published would forget every other model's
    deleted numbers: the publish is refused, with a message naming the file, and nothing moves."""
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / NUMBERS_FILE).write_text(text)
    folder = staged(model_dir, "m", "f")
    with pytest.raises(NumbersFileError, match=r"\.versions\.json"):
        publish(folder, model_dir, "m", "f")
    assert (model_dir / NUMBERS_FILE).read_text() == text
    assert folder.is_dir() and list_versions(model_dir / "m") == []


@pytest.mark.parametrize("existing_model", [False, True])
def test_a_publish_whose_config_cannot_be_written_leaves_no_version(
    tmp_path: Path, existing_model: bool
) -> None:
    """The rename happened, then the config could not be written (here: a base path root the
    config cannot hold; a full disk does the same): the job fails, so its version must not stay
    behind to be served or picked up by the next publish's config."""
    model_dir = tmp_path / "models"
    if existing_model:
        publish(staged(model_dir, "m", "a"), model_dir, "m", "a")
    before = (model_dir / CONFIG_FILE).read_text() if existing_model else None
    folder = staged(model_dir, "m", "b")
    with pytest.raises(ConfigRenderError):
        Repository(model_dir, '/data/"models').publish(folder, "m", "b")
    assert folder.is_dir() and (folder / contract.METADATA_FILE).is_file()  # for its caller
    if existing_model:
        assert list_versions(model_dir / "m") == [1]
        assert (model_dir / CONFIG_FILE).read_text() == before
    else:
        assert not (model_dir / "m").exists()  # no model folder without a version
    # The next publish gets a new number (the one taken back stays unused).
    assert publish(folder, model_dir, "m", "b") == (3 if existing_model else 2, True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs."""
    with small_tmpfs(tmp_path / "disk", "512k") as mount:
        yield mount


def fill(disk: Path) -> None:
    """Take every free block of the file system, as another writer (logs, exports) would."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_disk_that_fills_up_during_a_publish_leaves_no_version(small_disk: Path) -> None:
    """The export fitted, then the disk filled up before the config was written: before, the
    version stayed in the repository, unlisted in the config, while the job failed with ENOSPC."""
    model_dir = small_disk / "models"
    publish(staged(model_dir, "m", "a"), model_dir, "m", "a")
    before = (model_dir / CONFIG_FILE).read_text()
    folder = staged(model_dir, "new-model", "b")
    fill(small_disk)
    with pytest.raises(OSError) as raised:
        publish(folder, model_dir, "new-model", "b")
    assert raised.value.errno == errno.ENOSPC
    assert not (model_dir / "new-model").exists() and folder.is_dir()
    assert (model_dir / CONFIG_FILE).read_text() == before
    assert list_versions(model_dir / "m") == [1]
