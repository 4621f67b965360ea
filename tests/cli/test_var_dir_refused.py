"""An FDL_VAR_DIR that cannot be made or written (under a regular file, in a read-only folder) is
refused at start in one line naming the setting: by `fdl up` (exit 2; before, a traceback from
its mkdir) and by the worker (exit 1; before, it started and its jobs ran without TensorBoard
logs or failed on the dataset cache). The gateway does not use the folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fdl.settings import prepare_var_dir
from harness.procs import VENV_BIN
from harness.worker import WORKER_ARGV
from tests.cli.test_up_refuses import up_env
from tests.cli.test_up_settings import refused
from tests.training.test_worker_settings import run_worker
from tests.unprivileged import unprivileged

PREPARE = (
    "import sys; from pathlib import Path; from fdl.settings import prepare_var_dir; "
    "print(prepare_var_dir(Path(sys.argv[1])))"
)


def under_a_file(tmp_path: Path) -> tuple[Path, str]:
    """A var folder whose parent is a regular file, and the reason it is refused."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "var", f"cannot be made: {blocker} is not a folder"


@pytest.mark.parametrize("variable", ["FDL_VAR_DIR", "FDL_DATA_DIR"])
def test_fdl_up_refuses_a_folder_under_a_file_in_one_line(
    variable: str, tmp_path: Path, logs_dir: Path
) -> None:
    env = up_env(tmp_path)
    path, reason = under_a_file(tmp_path)
    env[variable] = str(path)
    output = refused(f"fdl-up-unmakeable-{variable}", env, tmp_path, logs_dir)
    assert output == f"fdl up: {variable}: {path} {reason}", output


def test_the_worker_refuses_a_var_dir_under_a_file_in_one_line(tmp_path: Path) -> None:
    path, reason = under_a_file(tmp_path)
    result = run_worker(tmp_path, FDL_VAR_DIR=str(path))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr == f"fdl-worker: FDL_VAR_DIR: {path} {reason}\n", output


def test_the_worker_makes_a_missing_var_dir(tmp_path: Path) -> None:
    """A missing one is made, parents and all (the reason it is refused is not its absence)."""
    var_dir = tmp_path / "new" / "var"
    assert prepare_var_dir(var_dir) is None
    assert var_dir.is_dir()


def test_a_var_dir_that_is_a_dangling_link_is_made_as_fdl_up_makes_it(tmp_path: Path) -> None:
    """`fdl up` resolves FDL_VAR_DIR and makes the link's target; the worker, which refused it
    with "cannot be made (File exists)" (mkdir's EEXIST on the link), now does the same."""
    target = tmp_path / "elsewhere" / "var"
    link = tmp_path / "var-link"
    link.symlink_to(target)
    assert prepare_var_dir(link) is None
    assert target.is_dir() and link.is_dir()


def test_a_read_only_var_dir_is_refused(tmp_path: Path) -> None:
    """As a process that folder permissions bind: as root too, without CAP_DAC_OVERRIDE."""
    prefix = unprivileged()
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    env |= {"FDL_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": f"{VENV_BIN}:{env['PATH']}"}

    def run(*argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *argv], cwd=tmp_path, env=env | settings, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    try:
        for path, line in (
            (folder, f"FDL_VAR_DIR: {folder} is not writable"),
            (
                folder / "var",
                f"FDL_VAR_DIR: {folder / 'var'} cannot be made: {folder} is not writable",
            ),
        ):
            checked = run(sys.executable, "-c", PREPARE, str(path))
            assert checked.stdout == f"{line}\n", checked.stdout + checked.stderr
            result = run(*WORKER_ARGV, FDL_VAR_DIR=str(path))
            output = result.stdout + result.stderr
            assert result.returncode == 1, output
            assert result.stderr == f"fdl-worker: {line}\n", output
        assert not (folder / "var").exists()
    finally:
        folder.chmod(0o755)
