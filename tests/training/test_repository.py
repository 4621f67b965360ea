"""The model repository with real files: one version per job, readable files, and a config that
is never written unless it parses back."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from fdl import contract
from fdl.model_config import ConfigRenderError, render
from fdl.repository import CONFIG_FILE, Repository
from fdl.repository_reads import LABELS_FILE, find_job_version, list_versions
from training.publish import publish, published_before, staging_dir


def _staged(model_path: Path, job_id: str) -> Path:
    """A staged export as the worker writes it, with the job id in its metadata."""
    staged = staging_dir(model_path, job_id)
    (staged / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (staged / "saved_model.pb").write_bytes(b"x")
    (staged / contract.METADATA_FILE).write_text(
        json.dumps({"job_id": job_id, "metrics": {"test_accuracy": 0.9}})
    )
    return staged


def test_a_rerun_job_finds_its_version_and_publishes_no_second(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    first = _staged(model_dir / "m", "job-a")
    assert publish(first, model_dir, "m", "job-a") == (1, True)
    assert publish(_staged(model_dir / "m", "job-b"), model_dir, "m", "job-b") == (2, True)
    # The first run's record was lost after the rename; the job runs again and exports again.
    again = _staged(model_dir / "m", "job-a")
    assert publish(again, model_dir, "m", "job-a") == (1, False)
    assert list_versions(model_dir / "m") == [1, 2]
    # ... and a re-run learns it before training at all.
    earlier = published_before(model_dir, "m", "job-a")
    assert earlier is not None and earlier["version"] == 1 and earlier["published"] is True
    assert earlier["metrics"] == {"test_accuracy": 0.9}
    assert published_before(model_dir, "m", "job-c") is None


def test_a_version_whose_metadata_is_a_named_pipe_is_never_waited_on(tmp_path: Path) -> None:
    """A version folder copied in by hand may hold anything as its metadata: a job looking for
    the version it published before reads it bounded and moves on, never blocked on a FIFO."""
    model_dir = tmp_path / "models"
    assert publish(_staged(model_dir / "m", "job-a"), model_dir, "m", "job-a") == (1, True)
    odd = model_dir / "m" / "2" / contract.METADATA_FILE
    odd.parent.mkdir(parents=True)
    os.mkfifo(odd)
    found: list[int | None] = []
    reader = threading.Thread(
        target=lambda: found.append(find_job_version(model_dir / "m", "job-a"))
    )
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # let a reader blocked in open() go before failing
        with open(odd, "w"):
            pass
        reader.join(timeout=10)
        pytest.fail("find_job_version waited on a named pipe")
    assert found == [1]


def test_repository_files_are_readable_by_other_users(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    previous = os.umask(0o022)
    try:
        staged = _staged(model_dir / "m", "job-a")
        os.chmod(staged / "saved_model.pb", 0o600)  # as a restrictive writer may leave it
        publish(staged, model_dir, "m", "job-a")
        repository = Repository(model_dir)
        with repository.locked():
            repository.write_labels({"m": {"stable": 1}})
            repository.write_config(repository.render())
    finally:
        os.umask(previous)
    for name in (CONFIG_FILE, LABELS_FILE):
        assert stat.S_IMODE((model_dir / name).stat().st_mode) == 0o644, name
    version = model_dir / "m" / "1"
    assert stat.S_IMODE((version / "saved_model.pb").stat().st_mode) & 0o444 == 0o444
    assert stat.S_IMODE(version.stat().st_mode) & 0o555 == 0o555


def test_invalid_folder_names_are_skipped_and_the_config_parses(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    for name in ("good", "evil\n", "Bad.Name", ".hidden"):
        (model_dir / name / "1").mkdir(parents=True)
    (model_dir / "good" / "1" / "saved_model.pb").write_bytes(b"x")  # a version holds a graph
    (model_dir / "good" / "\u00b2").mkdir()  # a unicode digit is not a version
    repository = Repository(model_dir)
    text = repository.render({"good": {"stable": 1}})
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert [m.name for m in parsed.model_config_list.config] == ["good"]
    assert list_versions(model_dir / "good") == [1]


@pytest.mark.parametrize(
    "labels",
    [{"good": {"evil\n": 1}}, {"good": {'x" } config { name: "y': 1}}, {"good": {"7": 1}}],
)
def test_rendering_refuses_labels_that_would_not_parse_back(tmp_path: Path, labels: dict) -> None:
    with pytest.raises(ConfigRenderError):
        render("/models", {"good": [1]}, labels)
    # A bad label already in labels.json is left out (with a warning), not written, and does
    # not stop the repository's later writes.
    model_dir = tmp_path / "models"
    (model_dir / "good" / "1").mkdir(parents=True)
    (model_dir / LABELS_FILE).write_text(json.dumps({"good": {**labels["good"], "stable": 1}}))
    text = (Repository(model_dir).sync()).read_text()
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert dict(parsed.model_config_list.config[0].version_labels) == {"stable": 1}


@pytest.mark.parametrize("root", ['/data/"models', "/data/models\n", "/data/mo\\dels"])
def test_rendering_refuses_a_base_path_that_would_not_parse_back(tmp_path: Path, root: str) -> None:
    model_dir = tmp_path / "models"
    (model_dir / "good" / "1").mkdir(parents=True)
    Repository(model_dir).sync()
    before = (model_dir / CONFIG_FILE).read_text()
    with pytest.raises(ConfigRenderError):
        Repository(model_dir, root).sync()
    assert (model_dir / CONFIG_FILE).read_text() == before


@pytest.mark.parametrize("root", ["models", "./models", "var/models", "~/models", ""])
def test_rendering_refuses_a_relative_base_path_root(tmp_path: Path, root: str) -> None:
    """FDL_SERVING_MODEL_BASE_PATH=models rendered ``base_path: "models/x"``, which the model
    server refuses, as TF Serving does, at every poll of the file and every reload; the writer
    now refuses it by the server's rule and writes nothing."""
    model_dir = tmp_path / "models"
    (model_dir / "good" / "1").mkdir(parents=True)
    Repository(model_dir).sync()
    before = (model_dir / CONFIG_FILE).read_text()
    with pytest.raises(ConfigRenderError, match=r"relative.*FDL_SERVING_MODEL_BASE_PATH"):
        render(root, {"good": [1]}, {})
    if root:  # an empty root is FDL_MODEL_DIR resolved to the repository
        with pytest.raises(ConfigRenderError, match="relative"):
            Repository(model_dir, root).sync()
    assert (model_dir / CONFIG_FILE).read_text() == before


@pytest.mark.parametrize("root", ["/srv/models", "/", "gs://bucket/models", "s3://b/m"])
def test_rendering_takes_an_absolute_base_path_root_or_a_uri(root: str) -> None:
    text = render(root, {"good": [1]}, {})
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].base_path == f"{root.rstrip('/')}/good"


def test_a_published_version_is_flushed_to_disk_before_and_after_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power loss after an acknowledged publish must not leave empty files or a lost rename:
    every file and folder of the version is fsynced before the rename, the folders that hold
    the rename after it."""
    model_dir = tmp_path / "models"
    staged = _staged(model_dir / "m", "job-a")
    inodes = {os.stat(path).st_ino: path for path in [staged, *staged.rglob("*")]}
    events: list[tuple[str, int]] = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_ino)), real_fsync(fd))[1]
    )

    def rename(source: str | Path, target: str | Path) -> None:
        events.append(("rename", os.stat(source).st_ino))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    publish(staged, model_dir, "m", "job-a")
    renamed = events.index(("rename", os.stat(model_dir / "m" / "1").st_ino))
    flushed_before = {inode for kind, inode in events[:renamed] if kind == "fsync"}
    flushed_after = {inode for kind, inode in events[renamed:] if kind == "fsync"}
    assert not set(inodes) - flushed_before, [str(inodes[i]) for i in set(inodes) - flushed_before]
    assert os.stat(model_dir / "m").st_ino in flushed_after
    assert os.stat(model_dir).st_ino in flushed_after  # the config's rename, and a new model
