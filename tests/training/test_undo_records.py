"""A process killed (SIGKILL) while it holds the repository lock in the middle of a change of
labels, or of a publish: the next holder of the lock rolls the change back (it was never
acknowledged) or, once the change stood, keeps it, and ``labels.json`` and ``models.config``
agree either way. The dying writer is a real child process, killed at a chosen step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fdl.repository_settled
from fdl.repository import CONFIG_FILE, Repository
from fdl.repository_files import UndoPoint
from fdl.repository_reads import LABELS_FILE, list_versions
from harness.procs import REPO_ROOT
from training.publish import render_config_again

# A writer that takes the lock, makes the steps named in argv[2], then dies with SIGKILL.
DYING_WRITER = """
import os, signal, sys
from pathlib import Path
from fdl.repository import CONFIG_FILE, Repository
from fdl.repository_reads import LABELS_FILE
from fdl.repository_files import UndoPoint, drop_record

repo = Repository(Path(sys.argv[1]))
new = {"m": {"stable": 2, "canary": 1}}
with repo.locked():
    undo = None
    for step in sys.argv[2].split(","):
        if step == "undo-point":
            undo = repo.undo_point()
        elif step == "keep":  # a promotion's step 1: version 1 kept loaded
            repo.write_config(repo.render(repo.labels(), {"m": {1}}))
        elif step == "labels":
            repo.write_labels(new)
        elif step == "config":
            repo.write_config(repo.render(new))
        elif step == "discard-labels":  # discard's first drop: the change stands
            drop_record(repo.model_dir, LABELS_FILE)
        elif step == "restore-labels":  # restore, cut after labels.json is back
            from fdl.repository_files import put_back
            put_back(repo.model_dir, LABELS_FILE)
        elif step == "publish-undo-point":
            undo = UndoPoint(repo.model_dir, (CONFIG_FILE,))
        elif step == "publish-rename":
            os.rename(repo.model_dir / ".staged", repo.model_dir / "m" / "3")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_dying(script: str, *args: str) -> None:
    """Run ``script`` in a child process with ``args``, which must kill itself with SIGKILL."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


def die_after(model_dir: Path, steps: str) -> None:
    run_dying(DYING_WRITER, str(model_dir), steps)


def files(model_dir: Path) -> tuple[str | None, str, list[str]]:
    """labels.json (None: absent), models.config, and the undo records left."""
    labels = model_dir / LABELS_FILE
    text = labels.read_text() if labels.exists() else None
    records = sorted(p.name for p in model_dir.iterdir() if ".undo" in p.name)
    return text, (model_dir / CONFIG_FILE).read_text(), records


def repository(tmp_path: Path, labelled: bool) -> Repository:
    """Model ``m`` with versions 1 and 2; ``stable -> 2`` in labels.json, or no labels.json."""
    repo = Repository(tmp_path / "models")
    for version in (1, 2):
        (repo.model_dir / "m" / str(version)).mkdir(parents=True)
        (repo.model_dir / "m" / str(version) / "saved_model.pb").write_bytes(b"x")
    with repo.locked():
        if labelled:
            repo.write_labels({"m": {"stable": 2}})
        repo.write_config(repo.render())
    return repo


@pytest.mark.parametrize("labelled", [True, False], ids=["labels", "no-labels-file"])
@pytest.mark.parametrize(
    "steps",
    [
        "undo-point",
        "undo-point,keep",
        "undo-point,labels",
        "undo-point,keep,labels,config",
        "undo-point,labels,config,restore-labels",
    ],
)
def test_the_next_holder_rolls_back_a_change_cut_short(
    tmp_path: Path, labelled: bool, steps: str
) -> None:
    repo = repository(tmp_path, labelled)
    before = files(repo.model_dir)
    die_after(repo.model_dir, steps)
    assert files(repo.model_dir) != before or steps == "undo-point"  # something was left
    with repo.locked():  # the next writer, here a `python -m fdl.repository` sync
        pass
    assert files(repo.model_dir) == before


def test_a_change_that_stood_is_kept_when_its_discard_is_cut_short(tmp_path: Path) -> None:
    """Killed between discard's two drops: the change stood, the config is rendered again from
    the labels it wrote, which changes nothing."""
    repo = repository(tmp_path, labelled=True)
    die_after(repo.model_dir, "undo-point,labels,config,discard-labels")
    after = files(repo.model_dir)
    assert after[2] == [f".{CONFIG_FILE}.undo"]
    assert repo.recover() is True  # as the next holder of the lock
    assert files(repo.model_dir) == (after[0], after[1], [])
    assert json.loads(after[0] or "") == {"m": {"canary": 1, "stable": 2}}


def test_a_publish_cut_short_is_rendered_as_the_reaper_renders_it(tmp_path: Path) -> None:
    """A worker killed after renaming its version in, before writing the config: the next
    holder renders the config with the version (never the old config back, which would hide
    it), as the job reaper's ``render_config_again`` does for the job it counts as published."""
    repo = repository(tmp_path, labelled=True)
    labels, config, _ = files(repo.model_dir)
    (repo.model_dir / ".staged").mkdir()
    (repo.model_dir / ".staged" / "saved_model.pb").write_bytes(b"x")
    die_after(repo.model_dir, "publish-undo-point,publish-rename")
    assert list_versions(repo.model_dir / "m") == [1, 2, 3]
    assert files(repo.model_dir) == (labels, config, [f".{CONFIG_FILE}.undo"])
    render_config_again(repo.model_dir, None, "job-killed")  # the reaper: takes the lock too
    assert files(repo.model_dir) == (labels, repo.render(), [])
    assert repo.render() != config  # version 3 is in it


def test_an_undo_point_restored_without_writes_leaves_no_record(tmp_path: Path) -> None:
    """A change that fails before writing renames each link over the very file it links to,
    which does nothing: the link must still go."""
    repo = repository(tmp_path, labelled=True)
    before = files(repo.model_dir)
    with repo.locked():
        repo.undo_point().restore()
    assert files(repo.model_dir) == before


@pytest.mark.parametrize("outcome", ["in flight", "undone"])
def test_a_reader_never_returns_a_change_made_during_its_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """A change that begins between the reader's look for an undo record and its read of
    labels.json (its record linked, the file replaced) is not returned, whether it is still in
    flight (its writer holds the lock) or was undone before the reader looked again (no record
    then, but labels.json is another file)."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    reader, writer = Repository(model_dir), Repository(model_dir)
    before = {"m": {"stable": 1}}
    writer.write_labels(before)
    lock = writer.file_lock()
    lock.acquire()
    looks: list[bool] = []
    undo: list[UndoPoint] = []
    look = fdl.repository_settled.has_record

    def racing_look(folder: Path, name: str) -> bool:
        if len(looks) == 1 and outcome == "undone":  # undone after the read, before this look
            undo[0].restore()
        found = look(folder, name)
        if not looks:  # the writer's first steps land right after the reader's first look
            undo.append(writer.undo_point())
            writer.write_labels({"m": {"stable": 2, "canary": 1}})
        looks.append(found)
        return found

    monkeypatch.setattr(fdl.repository_settled, "has_record", racing_look)
    try:
        assert reader.settled_labels() == before
    finally:
        lock.release()
    assert len(looks) >= 2
