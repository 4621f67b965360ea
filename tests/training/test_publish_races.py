"""Publication with real files when runs overlap: two runs of one job stage apart, stale staging
folders go and live ones stay, only_if_better holds under the repository lock, and a new model's
folder appears only with its first version."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from fdl import contract
from fdl.jobspec import PublishSpec
from fdl.repository import Repository
from fdl.repository_reads import discover_models, list_versions
from training.publish import (
    GateClosed,
    gate_under_lock,
    publish,
    published_accuracy,
    quality_gate,
    staging_dir,
)


def export(staged: Path, job_id: str, accuracy: float = 0.9, complete: bool = True) -> Path:
    """What write_model writes, in its order: the SavedModel first, metadata.json last."""
    (staged / "variables").mkdir(parents=True, exist_ok=True)
    (staged / "saved_model.pb").write_bytes(b"graph")
    if complete:
        (staged / "variables" / "variables.index").write_bytes(b"index")
        (staged / contract.ASSETS_EXTRA_DIR).mkdir(exist_ok=True)
        metadata = {"job_id": job_id, "metrics": {"test_accuracy": accuracy}}
        (staged / contract.METADATA_FILE).write_text(json.dumps(metadata))
    return staged


def test_two_runs_of_one_job_stage_apart_and_publish_one_complete_version(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "models"
    first = export(staging_dir(model_dir / "m", "job1"), "job1")
    # A second run of the job (a reaper's re-run of a live worker's job) reaches its export.
    second = staging_dir(model_dir / "m", "job1")
    assert second != first
    export(second, "job1", complete=False)
    assert (first / contract.METADATA_FILE).is_file()  # the first run's export is untouched
    assert publish(first, model_dir, "m", "job1") == (1, True)
    version = model_dir / "m" / "1"
    assert (version / "variables" / "variables.index").is_file()
    assert (version / contract.METADATA_FILE).is_file()
    export(second, "job1")
    assert publish(second, model_dir, "m", "job1") == (1, False)  # one version per job
    shutil.rmtree(second)
    assert list_versions(model_dir / "m") == [1]


def test_stale_staging_folders_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    dead = export(model_dir / ".tmp-m-dead-0123", "dead")
    from_older_release = export(model_dir / "m" / ".tmp-older", "older")
    template = export(tmp_path / "template", "copied")
    # Not a wait for a process: the two folders above must be older than the 1 s staleness
    # below, by their inode change times, which nothing but time passing can age.
    time.sleep(1.5)
    live = export(staging_dir(model_dir / "m", "live", stale_after_s=1.0), "live")
    # A copy keeps old modification times; it is being written now all the same.
    copied = staging_dir(model_dir / "m", "copied", stale_after_s=1.0)
    shutil.copytree(template, copied)
    staging_dir(model_dir / "m", "next", stale_after_s=1.0)
    assert not dead.exists() and not from_older_release.exists()
    assert (live / contract.METADATA_FILE).is_file() and (copied / contract.METADATA_FILE).is_file()


def test_only_if_better_is_checked_again_under_the_repository_lock(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_path = model_dir / "m"
    publish(export(staging_dir(model_path, "job0"), "job0", 0.90), model_dir, "m", "job0")
    policy = PublishSpec(only_if_better=True)
    # Two jobs end training together; both pass the gate against version 1 (0.90).
    assert quality_gate(policy, 0.95, model_path)[0] and quality_gate(policy, 0.93, model_path)[0]
    better = export(staging_dir(model_path, "jobX"), "jobX", 0.95)
    worse = export(staging_dir(model_path, "jobY"), "jobY", 0.93)
    gate_x, gate_y = gate_under_lock(policy, 0.95), gate_under_lock(policy, 0.93)
    assert publish(better, model_dir, "m", "jobX", gate=gate_x) == (2, True)
    with pytest.raises(GateClosed) as closed:
        publish(worse, model_dir, "m", "jobY", gate=gate_y)
    # Worded as the gate before training words it, for the job's result.
    assert str(closed.value) == quality_gate(policy, 0.93, model_path)[1]
    assert "not better than the served version 2 (0.9500)" in str(closed.value)
    assert list_versions(model_path) == [1, 2] and worse.is_dir()  # left to the caller
    assert published_accuracy(model_path / "2") == 0.95
    # A re-run of the job that published finds its version; the gate does not refuse it.
    again = export(staging_dir(model_path, "jobX"), "jobX", 0.95)
    assert publish(again, model_dir, "m", "jobX", gate=gate_x) == (2, False)


def test_a_new_model_gets_its_folder_only_with_its_first_version(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    (model_dir / "old" / "1").mkdir(parents=True)
    repository = Repository(model_dir)
    staged = export(staging_dir(model_dir / "brand_new", "job1"), "job1")
    assert discover_models(model_dir) == ["old"]  # nothing shows during the export
    assert 'name: "brand_new"' not in repository.render()
    shutil.rmtree(staged)  # the export failed, or the job was cancelled at the last check
    assert not (model_dir / "brand_new").exists()
    assert repository.sync().read_text().count("name:") == 1

    def refuse(_model_path: Path) -> None:
        raise GateClosed("no")

    staged = export(staging_dir(model_dir / "brand_new", "job2"), "job2")
    with pytest.raises(GateClosed):
        publish(staged, model_dir, "brand_new", "job2", gate=refuse)
    assert not (model_dir / "brand_new").exists()
    assert publish(staged, model_dir, "brand_new", "job2") == (1, True)
    assert discover_models(model_dir) == ["brand_new", "old"]
