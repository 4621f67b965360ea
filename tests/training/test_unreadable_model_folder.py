"""One model folder that cannot be read (``chmod 000``: an export copied in by another user, a
transient permission problem) stops no publish of another model, and its entry in
``models.config``, labels included, is kept as it is, not dropped (which would unload it). A
publish to that model itself fails with an error naming it. The publishes run in a process that
permissions bind (tests/unprivileged.py): root would read the folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from fdl import contract
from fdl.repository import CONFIG_FILE, Repository
from fdl.repository_reads import LABELS_FILE, list_versions
from tests.unprivileged import closed, unprivileged
from training.publish import staging_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
# Repository.publish, as the worker calls it (training/publish.py), in a process of its own.
PUBLISH = """
import sys
from pathlib import Path
from fdl.repository import Repository
model_dir, model, job, staged = sys.argv[1:]
print(Repository(Path(model_dir)).publish(Path(staged), model, job))
"""


def _staged(model_path: Path, job_id: str) -> Path:
    staged = staging_dir(model_path, job_id)
    (staged / contract.ASSETS_EXTRA_DIR).mkdir(parents=True)
    (staged / "saved_model.pb").write_bytes(b"x")
    (staged / contract.METADATA_FILE).write_text(json.dumps({"job_id": job_id}))
    return staged


def _publish_unprivileged(model_dir: Path, model: str, job: str) -> subprocess.CompletedProcess:
    staged = _staged(model_dir / model, job)
    argv = [*unprivileged(), sys.executable, "-c", PUBLISH, str(model_dir), model, job, str(staged)]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False
    )


def _line_of(config: str, model: str) -> str:
    [line] = [line for line in config.splitlines() if f'name: "{model}"' in line]
    return line


def test_an_unreadable_model_stops_no_other_publish_and_keeps_its_entry(tmp_path: Path) -> None:
    unprivileged()  # skip early where permissions cannot be made to bind
    model_dir = tmp_path / "models"
    repository = Repository(model_dir)
    for model, job in (("a", "a-1"), ("b", "b-1"), ("b", "b-2")):
        assert repository.publish(_staged(model_dir / model, job), model, job)[1]
    (model_dir / LABELS_FILE).write_text(json.dumps({"b": {"stable": 1}}))
    before = repository.config_path.read_text() if repository.sync() else ""
    kept = _line_of(before, "b")
    assert 'key: "stable"' in kept and "versions: 1" in kept and "versions: 2" in kept

    with closed(model_dir / "b"):
        other = _publish_unprivileged(model_dir, "a", "a-2")
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == "(2, True)"
        after = repository.config_path.read_text()
        # b's entry as it was (labels and served versions), a's new version rendered.
        assert _line_of(after, "b") == kept
        assert after == before  # a, without labels, serves its latest: its line is the same
        assert "its entry in models.config is kept as it is" in other.stderr

        own = _publish_unprivileged(model_dir, "b", "b-3")
        assert own.returncode != 0
        assert "PermissionError" in own.stderr
        assert "Permission denied: the folder of model 'b' cannot be listed" in own.stderr
        assert repository.config_path.read_text() == before
    assert list_versions(model_dir / "a") == [1, 2]
    assert list_versions(model_dir / "b") == [1, 2]  # the refused publish left nothing
    assert not (model_dir / ".models.config.undo").exists()


def test_an_unreadable_model_without_an_entry_is_rendered_from_its_labels(tmp_path: Path) -> None:
    """A config without the model (written before it came, or removed): it is rendered with its
    labels' versions (its versions on disk unknown), still a model of the config."""
    unprivileged()
    model_dir = tmp_path / "models"
    repository = Repository(model_dir)
    for model, job in (("a", "a-1"), ("b", "b-1")):
        assert repository.publish(_staged(model_dir / model, job), model, job)[1]
    (model_dir / LABELS_FILE).write_text(json.dumps({"b": {"stable": 1}}))
    (model_dir / CONFIG_FILE).write_text("model_config_list {\n}\n")
    with closed(model_dir / "b"):
        other = _publish_unprivileged(model_dir, "a", "a-2")
        assert other.returncode == 0, other.stderr
    config = repository.config_path.read_text()
    line = _line_of(config, "b")
    assert "specific { versions: 1 }" in line and 'key: "stable"' in line
    assert 'name: "a"' in config


# A gateway's change of model b's labels that dies (SIGKILL) after writing both files, before
# the change stands (tests/training/test_undo_records.py has the steps).
DYING_CHANGE = """
import json, os, signal, sys
from pathlib import Path
from fdl.repository import Repository
repo = Repository(Path(sys.argv[1]))
new = json.loads(sys.argv[2])
with repo.locked():
    repo.undo_point()
    repo.write_labels(new)
    repo.write_config(repo.render(new))
    os.kill(os.getpid(), signal.SIGKILL)
"""
# The next holder of the lock, as ``python -m fdl.repository`` (``fdl up``) is: it rolls back.
SYNC = """
import sys
from pathlib import Path
from fdl.repository import Repository
Repository(Path(sys.argv[1]), sys.argv[2] or None).sync()
"""


def _run(script: str, *args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = [*(prefix or []), sys.executable, "-c", script, *args]
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False
    )


def _two_models(model_dir: Path, labels: dict) -> Repository:
    repository = Repository(model_dir)
    for model, job in (("a", "a-1"), ("b", "b-1"), ("b", "b-2")):
        assert repository.publish(_staged(model_dir / model, job), model, job)[1]
    (model_dir / LABELS_FILE).write_text(json.dumps(labels))
    repository.sync()
    return repository


def test_a_dead_label_change_is_rolled_back_in_the_kept_entry_too(tmp_path: Path) -> None:
    """The labels are put back from the dead change's record, and the kept entry takes them
    (the old label's version loaded again): before, the entry kept the change never
    acknowledged, stable still on version 2 while labels.json said 1."""
    model_dir = tmp_path / "models"
    repository = _two_models(model_dir, {"b": {"stable": 1}})
    dying = _run(DYING_CHANGE, str(model_dir), json.dumps({"b": {"stable": 2}}))
    assert dying.returncode == -signal.SIGKILL, dying.stderr
    assert 'version_labels { key: "stable" value: 2 }' in _line_of(
        repository.config_path.read_text(), "b"
    )
    with closed(model_dir / "b"):
        synced = _run(SYNC, str(model_dir), "", prefix=unprivileged())
    assert synced.returncode == 0, synced.stderr
    assert "rolling back a change" in synced.stderr
    assert json.loads((model_dir / LABELS_FILE).read_text()) == {"b": {"stable": 1}}
    line = _line_of(repository.config_path.read_text(), "b")
    assert "specific { versions: 1 versions: 2 }" in line, line
    assert 'version_labels { key: "stable" value: 1 }' in line, line
    assert not list(model_dir.glob(".*.undo*"))


def test_a_dead_change_whose_labels_cannot_be_rendered_puts_the_config_back(
    tmp_path: Path,
) -> None:
    """The dead change removed b's only label (its entry then serves the latest): the label put
    back names a version the entry does not serve, and which is the latest cannot be known, so
    the config is put back from the change's record (before, the entry stayed without it)."""
    model_dir = tmp_path / "models"
    repository = _two_models(model_dir, {"b": {"stable": 1}})
    before = repository.config_path.read_text()
    dying = _run(DYING_CHANGE, str(model_dir), json.dumps({}))
    assert dying.returncode == -signal.SIGKILL, dying.stderr
    assert "version_labels" not in repository.config_path.read_text()
    with closed(model_dir / "b"):
        synced = _run(SYNC, str(model_dir), "", prefix=unprivileged())
    assert synced.returncode == 0, synced.stderr
    assert "which versions it has is not known" in synced.stderr
    assert "putting back its copy from the change" in synced.stderr
    assert json.loads((model_dir / LABELS_FILE).read_text()) == {"b": {"stable": 1}}
    assert repository.config_path.read_text() == before
    assert not list(model_dir.glob(".*.undo*"))


def test_the_kept_entry_takes_the_base_path_root_of_now(tmp_path: Path) -> None:
    """FDL_SERVING_MODEL_BASE_PATH changed (the model servers mount the repository elsewhere):
    the kept entry's base path is the new one, as every other model's (before, the old one)."""
    model_dir = tmp_path / "models"
    _two_models(model_dir, {"b": {"stable": 1}})
    Repository(model_dir, "/old").sync()
    with closed(model_dir / "b"):
        synced = _run(SYNC, str(model_dir), "/models", prefix=unprivileged())
    assert synced.returncode == 0, synced.stderr
    config = (model_dir / CONFIG_FILE).read_text()
    assert 'base_path: "/models/a"' in _line_of(config, "a")
    line = _line_of(config, "b")
    assert 'base_path: "/models/b"' in line, line
    assert "specific { versions: 1 versions: 2 }" in line and 'key: "stable"' in line
