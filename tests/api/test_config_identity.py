"""The replica sync's identity of the config file (api/replica_sync.py ``_read``) tells a file put
back by a rollback from the one it was before the change, though the rollback renames the same
inode back with its old mtime and size (the undo record is a hard link: fdl/repository_files.py).
Were they equal, a replica that took the undone change would look like one another config source
changed, and the sync would back off instead of sending it the file."""

from __future__ import annotations

from pathlib import Path

from api.replica_sync import _read
from fdl.files import atomic_write
from fdl.repository_files import UndoPoint


def test_a_config_put_back_by_a_rollback_is_another_identity(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    atomic_write(config, "model_config_list {}\n")
    before, text_before = _read(config)
    undo = UndoPoint(tmp_path, ["models.config"])
    atomic_write(config, "model_config_list { config { name: 'a' } }\n")
    undo.restore()
    after, text_after = _read(config)
    assert text_after == text_before
    assert config.stat().st_ino == before[0]  # the very same file is back
    assert after != before
