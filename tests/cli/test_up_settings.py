"""`fdl up` refuses settings that would break the stack, before it starts anything, with one line
naming the setting and exit status 2 (a usage error): its own (a port that is no number, a folder
that is a file or a FIFO, a model folder on a volume not mounted) and the gateway's and the
worker's (before, such a child exited at every start, with a traceback, under supervisord). Its
banner never shows a Redis password, wherever the URL holds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fdl.stack import Stack, redacted, redis_banner
from harness.procs import Process, wait_for
from harness.stack import fdl_up, stop_and_check_no_orphans
from tests.cli.test_up_refuses import KEY, up_env


def refused(name: str, env: dict[str, str], tmp: Path, logs_dir: Path) -> str:
    """Run `fdl up`, which must exit 2 without starting the stack; its output on one line."""
    process = Process(name, ["fdl", "up"], logs_dir, env=env, cwd=tmp)
    pid_file = Path(env["FDL_VAR_DIR"]) / "supervisord.pid"
    try:
        wait_for(
            lambda: not process.alive() or pid_file.exists(), 60, "fdl up to refuse, or to start"
        )
        assert not process.alive(), "fdl up started the stack"
    finally:
        stop_and_check_no_orphans(process)
    output = process.log_tail()
    assert process.popen.returncode == 2, output
    assert "Traceback" not in output and "╭" not in output, output  # no (rich) traceback
    assert not (Path(env["FDL_VAR_DIR"]) / "supervisord.conf").exists()
    return " ".join(output.split())


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"FDL_GATEWAY_PORT": "abc"},
            "fdl up: FDL_GATEWAY_PORT: Input should be a valid integer",
        ),
        (
            {"FDL_SERVING_REST_PORT": "99999"},
            "fdl up: FDL_SERVING_REST_PORT: not a port number from 1 to 65535",
        ),
        # The gateway's own settings.
        (
            {"FDL_MAX_BODY_BYTES": "99999999999"},
            "fdl up: FDL_BODY_BUDGET_BYTES must be at least FDL_MAX_BODY_BYTES",
        ),
        ({"FDL_LOG_LEVEL": "bogus"}, "fdl up: FDL_LOG_LEVEL: Input should be 'CRITICAL'"),
        (
            {"FDL_TRUSTED_PROXIES": "127.0.0.1/33"},
            "fdl up: FDL_TRUSTED_PROXIES: '127.0.0.1/33' is neither an IP address",
        ),
        # The worker's.
        (
            {"FDL_VISIBILITY_TIMEOUT_S": "5"},
            "fdl up: FDL_VISIBILITY_TIMEOUT_S: Input should be greater than or equal to 60",
        ),
    ],
    ids=["port-text", "port-range", "gateway-budget", "gateway-log-level", "proxies", "worker"],
)
def test_invalid_settings_stop_fdl_up_with_one_line(
    settings: dict[str, str], line: str, tmp_path: Path, logs_dir: Path
) -> None:
    name = "fdl-up-" + "-".join(settings).lower()
    output = refused(name, {**up_env(tmp_path), **settings}, tmp_path, logs_dir)
    assert output.startswith(line), output
    assert KEY not in output.split("fdl up:", 1)[1]


@pytest.mark.parametrize("variable", ["FDL_VAR_DIR", "FDL_MODEL_DIR", "FDL_DATA_DIR"])
@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_folder_setting_that_names_a_file_or_fifo_is_refused(
    variable: str, kind: str, tmp_path: Path, logs_dir: Path
) -> None:
    env = up_env(tmp_path)
    if variable != "FDL_VAR_DIR":
        (tmp_path / "var").mkdir()
    path = tmp_path / "var" / "thing" if variable != "FDL_VAR_DIR" else tmp_path / "thing"
    if kind == "file":
        path.write_text("")
    else:
        os.mkfifo(path)
    env[variable] = str(path)
    output = refused(f"fdl-up-{variable}-{kind}", env, tmp_path, logs_dir)
    assert output == f"fdl up: {variable}: {path} exists and is not a folder", output


def test_a_model_dir_on_a_volume_not_mounted_is_refused(tmp_path: Path, logs_dir: Path) -> None:
    """A set FDL_MODEL_DIR whose parent is missing is not made (the models would go to the disk
    under the mount point); the default var/models is, parents and all (a fresh checkout)."""
    env = up_env(tmp_path)
    env["FDL_MODEL_DIR"] = str(tmp_path / "mnt" / "models")
    output = refused("fdl-up-unmounted", env, tmp_path, logs_dir)
    assert output == (
        f"fdl up: FDL_MODEL_DIR: {tmp_path / 'mnt' / 'models'} does not exist, nor does its "
        "parent folder (a volume not mounted?)"
    ), output
    assert not (tmp_path / "mnt").exists()


@pytest.mark.parametrize("script", ["api.py", "fdl.py"])
def test_a_users_script_in_the_folder_is_neither_imported_nor_run(
    tmp_path: Path, logs_dir: Path, script: str
) -> None:
    """`fdl up` from a project's folder that holds an api.py (a FastAPI project's) or an fdl.py:
    the check of the children's settings (Python's -c) and the supervisor (-m) put the folder
    first on sys.path, imported the user's file in place of our package, ran it, and failed.
    (Celery's worker imports its app with the folder on sys.path, as Celery always does: an
    fdl.py there is still run by the worker, so the marker is checked for api.py only.)"""
    marker = tmp_path / "USER_SCRIPT_RAN"
    (tmp_path / script).write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )
    env = {**up_env(tmp_path), "FDL_API_KEYS": ""}
    var_dir = tmp_path / "var"
    with fdl_up(f"fdl-up-user-{script}", env, logs_dir, var_dir / "models", var_dir, cwd=tmp_path):
        pass
    assert script != "api.py" or not marker.exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:16399/4?password=SECRET", "redis://127.0.0.1:16399/4?password=***"),
        ("redis://:SECRET@db:6379/0", "redis://:***@db:6379/0"),
        (
            "redis://db/0?username=SECRET&Password=SECRET&socket_timeout=5",
            "redis://db/0?username=***&Password=***&socket_timeout=5",
        ),
        ("redis://db:6379/0", "redis://db:6379/0"),
    ],
)
def test_the_banner_masks_every_credential_of_the_redis_url(url: str, shown: str) -> None:
    assert redacted(url) == shown
    banner = redis_banner(Stack(env={"FDL_REDIS_URL": url}, var_dir=Path("/v")))
    assert "SECRET" not in banner and shown in banner, banner
    if shown != url:
        assert "the password is in /v/redis_url (mode 0600)" in banner
