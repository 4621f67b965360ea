"""A repository this process cannot write (a read-only mount, a volume owned by another user)
has nothing half made to roll back: the start-up recovery says the lock cannot be taken and that
publishes and promotions will fail, never "could not roll back the change left half made". The
recovery runs in a process that permissions bind (tests/unprivileged.py): root writes anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unprivileged import unprivileged

REPO_ROOT = Path(__file__).resolve().parents[2]
RECOVER = """
import logging, sys
from pathlib import Path
from fdl.repository import Repository
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
print("rolled back:", Repository(Path(sys.argv[1])).recover_if_free())
"""


def test_an_unwritable_repository_is_not_called_half_made(tmp_path: Path) -> None:
    prefix = unprivileged()
    model_dir = tmp_path / "models"
    (model_dir / "mnist").mkdir(parents=True)  # a volume made by another user: no lock file yet
    model_dir.chmod(0o555)
    try:
        argv = [*prefix, sys.executable, "-c", RECOVER, str(model_dir)]
        run = subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False
        )
    finally:
        model_dir.chmod(0o755)
    assert run.returncode == 0, run.stderr
    assert "rolled back: False" in run.stdout
    assert "half made" not in run.stderr
    assert "cannot take the repository lock" in run.stderr
    assert "publishes and promotions will fail" in run.stderr
    assert "Traceback" not in run.stderr
