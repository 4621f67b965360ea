"""The model repository's lock (taken by a promotion of the gateway and by a worker's publish)
makes a missing model folder but never its parent: a volume that is not mounted (or was
unmounted) stays missing, instead of the repository being started on the disk underneath.
`python -m fdl.repository` refuses such a set FDL_MODEL_DIR in one line, and makes the default
var/models, parents and all, on a fresh checkout (it used to fail there with a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fdl.repository import Repository, sync_config


def test_the_lock_makes_the_model_folder_but_not_a_missing_parent(tmp_path: Path) -> None:
    unmounted = tmp_path / "mnt" / "models"
    with pytest.raises(FileNotFoundError):
        Repository(unmounted).file_lock()
    with pytest.raises(FileNotFoundError):
        sync_config(unmounted)
    assert not (tmp_path / "mnt").exists()

    fresh = tmp_path / "models"
    with Repository(fresh).file_lock():
        assert fresh.is_dir()
    assert sync_config(fresh) == fresh / "models.config"


def sync_command(cwd: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python -m fdl.repository` as a deployment runs it, with only these FDL_ settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    return subprocess.run(
        [sys.executable, "-m", "fdl.repository"],
        cwd=cwd,
        env=env | settings,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_sync_command_makes_the_default_folder_on_a_fresh_checkout(tmp_path: Path) -> None:
    result = sync_command(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "models" / "models.config").is_file()


def test_the_sync_command_refuses_a_set_folder_on_a_volume_not_mounted(tmp_path: Path) -> None:
    unmounted = tmp_path / "mnt" / "models"
    result = sync_command(tmp_path, FDL_MODEL_DIR=str(unmounted))
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"python -m fdl.repository: FDL_MODEL_DIR: {unmounted} does not exist, nor does its "
        "parent folder (a volume not mounted?)\n"
    )
    assert not (tmp_path / "mnt").exists()
