"""The worker's settings are checked at start: an invalid one stops the real worker command with
one line naming the variable and the reason (never its value, never a traceback); durations are
finite and bounded (a wait past threading's limit killed the reaper's or a heartbeat's thread while
the worker ran on); and FDL_STALE_AFTER_S is several heartbeats long (a healthy run was taken for
lost and run again while its worker still trained it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.procs import VENV_BIN
from harness.worker import WORKER_ARGV
from training.publish import staging_dir
from training.settings import WorkerSettings, get_settings, settings_or_exit


def run_worker(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """The worker command of `fdl up` with only these FDL_ settings, from a folder with no
    .env, to its end (a Redis that is never reached: the settings stop it before)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    env |= {"FDL_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": f"{VENV_BIN}:{env['PATH']}"}
    return subprocess.run(
        WORKER_ARGV,
        cwd=tmp_path,
        env=env | settings,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"FDL_MAX_ATTEMPTS": "2.5"}, "FDL_MAX_ATTEMPTS: Input should be a valid integer"),
        ({"FDL_REAPER_INTERVAL_S": "1e10"}, "FDL_REAPER_INTERVAL_S: Input should be less than"),
        (
            {"FDL_HEARTBEAT_INTERVAL_S": "1e10"},
            "FDL_HEARTBEAT_INTERVAL_S: Input should be less than",
        ),
        ({"FDL_STALE_AFTER_S": "nan"}, "FDL_STALE_AFTER_S: Input should be a finite number"),
        ({"FDL_JOB_RETENTION_S": "inf"}, "FDL_JOB_RETENTION_S: Input should be a finite number"),
        (
            {"FDL_HEARTBEAT_INTERVAL_S": "60", "FDL_STALE_AFTER_S": "4"},
            "FDL_STALE_AFTER_S must be at least 3 times FDL_HEARTBEAT_INTERVAL_S",
        ),
        (
            {"FDL_CHECKPOINT_DIR": "."},
            "FDL_CHECKPOINT_DIR must be a folder of its own: it is or holds FDL_VAR_DIR",
        ),
        (
            {"FDL_CHECKPOINT_DIR": "shared", "FDL_DATA_DIR": "shared"},
            "FDL_CHECKPOINT_DIR must be a folder of its own: it is or holds FDL_DATA_DIR",
        ),
        (
            {"FDL_CHECKPOINT_DIR": "var/models/checkpoints"},
            "FDL_CHECKPOINT_DIR must not be inside FDL_MODEL_DIR, among the models",
        ),
    ],
    ids=[
        "int-as-float",
        "reaper-1e10",
        "heartbeat-1e10",
        "nan",
        "inf",
        "stale-below-beats",
        "checkpoints-in-working-folder",
        "checkpoints-are-the-data",
        "checkpoints-among-models",
    ],
)
def test_an_invalid_setting_stops_the_worker_in_one_line(
    tmp_path: Path, settings: dict[str, str], line: str
) -> None:
    result = run_worker(tmp_path, **settings)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr.startswith(f"fdl-worker: {line}"), output
    assert result.stderr.count("\n") == 1 and "Traceback" not in output, output
    for value in settings.values():
        assert f" {value}" not in output.replace("FDL_", ""), (value, output)


@pytest.mark.parametrize("kind", ["unmounted", "file"])
def test_a_model_dir_the_gateway_refuses_stops_the_worker_in_one_line(
    tmp_path: Path, kind: str
) -> None:
    """A set FDL_MODEL_DIR on a volume not mounted: the gateway refused to start, while the
    worker made the folder, parents and all, and published to the disk underneath."""
    model_dir = tmp_path / "mnt" / "models" if kind == "unmounted" else tmp_path / "models"
    if kind == "file":
        model_dir.write_text("")
    result = run_worker(tmp_path, FDL_MODEL_DIR=str(model_dir))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    reason = (
        "does not exist, nor does its parent folder (a volume not mounted?)"
        if kind == "unmounted"
        else "exists and is not a folder"
    )
    assert result.stderr == f"fdl-worker: FDL_MODEL_DIR: {model_dir} {reason}\n", output
    assert not (tmp_path / "mnt").exists()


def test_the_default_model_dir_is_made_at_start_and_staging_makes_no_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("FDL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FDL_REDIS_URL", "redis://unused")
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no var/, no .env
    get_settings.cache_clear()
    try:
        assert settings_or_exit().model_dir == Path("var/models")
    finally:
        get_settings.cache_clear()
    assert (tmp_path / "var" / "models").is_dir()
    unmounted = tmp_path / "mnt" / "models"
    with pytest.raises(FileNotFoundError):
        staging_dir(unmounted / "digits", "job-1")
    assert not (tmp_path / "mnt").exists()
    assert staging_dir(tmp_path / "models" / "digits", "job-1").parent == tmp_path / "models"


def worker_settings(**fields: object) -> WorkerSettings:
    return WorkerSettings(_env_file=None, redis_url="redis://unused", **fields)  # type: ignore[call-arg]


def test_defaults_and_documented_values_are_accepted() -> None:
    defaults = worker_settings()
    assert defaults.stale_after_s >= 3 * defaults.heartbeat_interval_s
    assert worker_settings(job_retention_s=0).job_retention_s == 0  # 0 keeps records forever
    # The fast reaper of the tests and harness that kill workers, and the bound itself.
    assert worker_settings(heartbeat_interval_s=0.5, stale_after_s=3, reaper_interval_s=1)
    assert worker_settings(heartbeat_interval_s=1, stale_after_s=3)


@pytest.mark.parametrize(
    "field",
    [
        "heartbeat_interval_s",
        "reaper_interval_s",
        "redis_retry_s",
        "resend_queued_after_s",
        "job_retention_s",
        "max_job_duration_s",
        "job_kill_grace_s",
        "publish_lock_wait_s",
        "download_timeout_s",
        "stale_after_s",
    ],
)
def test_every_duration_is_bounded(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        worker_settings(**{field: 1e10})
    with pytest.raises(ValidationError, match=field):
        worker_settings(**{field: float("inf")})
