"""What a fresh user's walkthrough of the CLI ran into, against a real gateway: the default URL
follows FDL_GATEWAY_PORT (as `fdl up` reads it, `.env` included), `fdl train --spec` with the
model in the file, the key hint saying where the key file was looked for, the "Published" line,
output that is not a terminal (a pipe) printed as plain whole lines, every `fdl train` flag in
docs/ui.md, and the example images of the docs written from the real test data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.job_records import JobStatus
from fdl.jobs import JobStore
from fdl.stack import record_gateway
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway, bearer
from harness.mnist import mnist_test_digits
from harness.procs import REPO_ROOT, free_port

# No FDL_ variable of the test's own environment leaks in (FDL_URL above all).
CLEAN = {name: None for name in os.environ if name.startswith("FDL_")}


class Ran:
    """What `fdl ARGS` did: its exit code, its output and that output's runs of whitespace made
    one space (``flat``: rich wraps messages at the width of the output)."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str | None]) -> None:
        result = CliRunner().invoke(app, list(args), env={**CLEAN, **env})
        assert result.exception is None or isinstance(result.exception, SystemExit), result
        self.exit_code, self.output = result.exit_code, result.output
        self.flat = " ".join(result.output.split())


def fdl(*args: str, **env: str | None) -> Ran:
    return Ran(args, env)


def port_of(gateway: Gateway) -> str:
    return str(httpx.URL(gateway.url).port)


def cancel(gateway: Gateway, job_id: str) -> None:
    httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)


# --- 1. the default URL --------------------------------------------------------------------------


def test_the_default_url_follows_fdl_gateway_port(gateway: Gateway) -> None:
    result = fdl("jobs", "--json", FDL_GATEWAY_PORT=port_of(gateway), FDL_API_KEY=ADMIN_KEY)
    assert result.exit_code == ExitCode.OK, result.output
    assert '"jobs"' in result.output


def test_fdl_url_and_url_still_win_over_fdl_gateway_port(gateway: Gateway) -> None:
    elsewhere = str(free_port())  # nothing listens there
    for args, env in (
        (("--url", gateway.url), {}),
        ((), {"FDL_URL": gateway.url}),
    ):
        result = fdl(
            "jobs", "--json", *args, FDL_GATEWAY_PORT=elsewhere, FDL_API_KEY=ADMIN_KEY, **env
        )
        assert result.exit_code == ExitCode.OK, result.output


def test_an_unreachable_default_says_where_the_url_came_from() -> None:
    port = str(free_port())
    result = fdl("jobs", FDL_GATEWAY_PORT=port, FDL_API_KEY="k")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert f"http://127.0.0.1:{port} (the default" in result.flat
    assert "FDL_GATEWAY_PORT" in result.flat


def test_a_bad_fdl_gateway_port_is_a_usage_error() -> None:
    result = fdl("jobs", FDL_GATEWAY_PORT="eighty", FDL_API_KEY="k")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "FDL_GATEWAY_PORT" in result.flat and "eighty" not in result.flat


def test_the_port_and_the_key_file_come_from_dot_env_as_for_fdl_up(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "api_key").write_text(ADMIN_KEY + "\n")
    (tmp_path / ".env").write_text(f"FDL_GATEWAY_PORT={port_of(gateway)}\nFDL_VAR_DIR=state\n")
    monkeypatch.chdir(tmp_path)
    result = fdl("jobs", "--json")
    assert result.exit_code == ExitCode.OK, result.output


@pytest.mark.parametrize(
    "dot_env", [b"FDL_GATEWAY_PORT=abc\n", b"FOO=\xff\xfe not UTF-8\n"], ids=["bad", "binary"]
)
def test_a_foreign_dot_env_never_stops_a_command_given_its_url(
    dot_env: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .env here that belongs to something else (a bad FDL_GATEWAY_PORT, bytes that are not
    UTF-8) matters only where the CLI needs it: with a URL given, the command goes on (nothing
    answers at this one: exit 3), as it did before the CLI read .env at all."""
    (tmp_path / ".env").write_bytes(dot_env)
    monkeypatch.chdir(tmp_path)
    nowhere = f"http://127.0.0.1:{free_port()}"
    for args, env in ((("--url", nowhere), {}), ((), {"FDL_URL": nowhere})):
        result = fdl("models", *args, **env)
        assert result.exit_code == ExitCode.UNREACHABLE, result.output
    # Without a URL the default needs the port: a usage error naming the way out.
    result = fdl("models")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--url" in result.flat


def test_a_gateway_on_this_machine_is_never_reached_through_a_proxy(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY set without NO_PROXY for 127.0.0.1: httpx sent the request, and with it the key
    from `fdl up`'s key file, to the proxy. A proxy that answers nothing would fail the call."""
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "api_key").write_text(ADMIN_KEY)
    record_gateway(tmp_path / "var", "127.0.0.1", int(port_of(gateway)))  # as `fdl up` does
    monkeypatch.chdir(tmp_path)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.setenv("ALL_PROXY", dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = fdl("models", "--json", "--url", gateway.url)
    assert result.exit_code == ExitCode.OK, result.output


# --- 2. `fdl train --spec` naming the model ------------------------------------------------------


def submitted(gateway: Gateway, output: str) -> dict[str, object]:
    job_id = output.split("Job ", 1)[1].split()[0]
    response = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)
    cancel(gateway, job_id)
    return dict(response.json()["spec"])


def test_train_takes_the_model_from_the_spec_file(gateway: Gateway, tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text('{"model": "mnist_mlp", "epochs": 2}')
    common = ("--spec", str(spec), "--detach", "--url", gateway.url)
    alone = fdl("train", *common, FDL_API_KEY=ADMIN_KEY)
    assert alone.exit_code == ExitCode.OK, alone.output
    assert "submitted (mnist_mlp)" in alone.output
    job = submitted(gateway, alone.output)
    assert (job["model"], job["epochs"]) == ("mnist_mlp", 2)
    # The argument and the flags override the file.
    over = fdl("train", "mnist_logreg", "--epochs", "1", *common, FDL_API_KEY=ADMIN_KEY)
    assert over.exit_code == ExitCode.OK, over.output
    job = submitted(gateway, over.output)
    assert (job["model"], job["epochs"]) == ("mnist_logreg", 1)


@pytest.mark.parametrize("spec_text", [None, '{"epochs": 2}'])
def test_train_without_a_model_anywhere_says_both_ways(
    tmp_path: Path, spec_text: str | None
) -> None:
    args = ["train", "--url", f"http://127.0.0.1:{free_port()}"]  # exit 2 before any request
    if spec_text is not None:
        (tmp_path / "job.json").write_text(spec_text)
        args += ["--spec", str(tmp_path / "job.json")]
    result = fdl(*args, FDL_API_KEY="k")
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "as the argument" in result.flat and '"model" in the --spec file' in result.flat


# --- 3. docs/ui.md lists every `fdl train` flag --------------------------------------------------


def test_docs_list_every_fdl_train_flag() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    docs = (REPO_ROOT / "docs" / "ui.md").read_text()
    flags = [
        option
        for param in command.params
        for option in (*param.opts, *param.secondary_opts)
        if option.startswith("--")
    ]
    assert "--recipe" in flags
    missing = [flag for flag in flags if flag not in docs]
    assert not missing, missing


# --- 4. where the key file was looked for --------------------------------------------------------


def test_the_no_key_hint_names_the_key_file_it_tried(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # outside the checkout: no var/api_key here
    result = fdl("jobs", "--url", gateway.url)
    assert result.exit_code == ExitCode.AUTH, result.output
    assert "./var/api_key" in result.flat and "FDL_API_KEY" in result.flat
    elsewhere = tmp_path / "state"
    result = fdl("jobs", "--url", gateway.url, FDL_VAR_DIR=str(elsewhere))
    assert result.exit_code == ExitCode.AUTH, result.output
    assert str(elsewhere / "api_key") in result.flat
    elsewhere.mkdir()
    (elsewhere / "api_key").write_text(ADMIN_KEY)
    record_gateway(elsewhere, "127.0.0.1", int(port_of(gateway)))  # as `fdl up` does
    assert fdl("jobs", "--url", gateway.url, FDL_VAR_DIR=str(elsewhere)).exit_code == ExitCode.OK


# --- 5 and 6: a finished job's lines -------------------------------------------------------------

REASON = "test accuracy 0.9161 >= publish.min_accuracy 0.0000"
LONG_NOTE = "loading dataset mnist from " + "/a/rather/long/folder" * 6 + " (60000 examples)"


def finished_job(gateway: Gateway, redis_url: str) -> str:
    """A job that ran two epochs with every metric, a long note, and published version 1."""
    job = {"model": "mnist_logreg", "epochs": 2}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=job, headers=bearer(ADMIN_KEY), timeout=10)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    store = JobStore.from_url(redis_url)
    assert store.mark_running(job_id, "test-worker")
    assert store.append_event(job_id, "log", {"message": LONG_NOTE})
    for n in (1, 2):
        progress = {
            "epoch": n,
            "epochs": 2,
            "loss": 0.3247,
            "accuracy": 0.9123,
            "val_loss": 0.3012,
            "val_accuracy": 0.9201,
            "images_per_second": 12345.6,
            "eta_seconds": 0.0,
        }
        assert store.update_progress(job_id, progress)
    result = {
        "published": True,
        "model": "mnist_logreg",
        "version": 1,
        "reason": REASON,
        "metrics": {"test_accuracy": 0.9161},
    }
    assert store.finish(job_id, JobStatus.SUCCEEDED, result=result)
    return job_id


def test_the_published_line_keeps_the_version_apart_from_the_reason(
    gateway: Gateway, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    job_id = finished_job(gateway, redis_url)
    result = fdl("job", job_id, "--url", gateway.url, FDL_API_KEY=ADMIN_KEY, COLUMNS="300")
    assert result.exit_code == ExitCode.OK, result.output
    assert f"Published version 1 ({REASON})" in result.flat


def test_followed_output_to_a_pipe_is_whole_plain_lines(gateway: Gateway, redis_url: str) -> None:
    job_id = finished_job(gateway, redis_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_") and k != "COLUMNS"}
    env |= {"FDL_URL": gateway.url, "FDL_API_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    # stdout is a pipe, not a terminal; no model server: the version is never served.
    cli = BackgroundCli(["job", job_id, "--follow", "--serve-timeout", "0"], env)
    try:
        assert cli.popen.wait(60) == ExitCode.OK, cli.output()
        cli.pump.join(10)
    finally:
        cli.stop()
    out = cli.output()
    lines = out.splitlines()
    assert "…" not in out and "━" not in out, out  # nothing cut, no bar
    epoch = "epoch 2/2  loss 0.3247  acc 91.2%  val_loss 0.3012  val_acc 92.0%"
    assert epoch in lines, out
    assert LONG_NOTE in lines, out  # one line, however long
    assert "evaluating and publishing" in lines, out
    assert "Succeeded: published mnist_logreg version 1 (test accuracy 91.61%)." in lines, out


# --- 8. the example images -----------------------------------------------------------------------


def test_the_example_images_are_written_from_the_real_data(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "examples"
    script = REPO_ROOT / "scripts" / "example_images.py"
    run = subprocess.run(
        [sys.executable, str(script), "--data-dir", str(data_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    digits, labels = mnist_test_digits(data_dir, 10)
    with Image.open(out / "digit.png") as png:
        assert (png.format, png.size, png.mode) == ("PNG", (28, 28), "L")
        assert (np.asarray(png) == digits[0]).all() and labels[0] == 7
    with Image.open(out / "digit.jpg") as jpg:
        assert (jpg.format, jpg.size) == ("JPEG", (28, 28))
    written = sorted((out / "digits").glob("*.png"))
    assert [p.name for p in written] == [f"{i:04d}-{label}.png" for i, label in enumerate(labels)]
    for path, digit in zip(written, digits, strict=True):
        with Image.open(path) as png:
            assert (np.asarray(png) == digit).all()
    if (data_dir / "cifar10" / "cifar10-test-first1000-exact.npz").is_file():
        with Image.open(out / "cat.jpg") as cat:
            assert (cat.format, cat.size, cat.mode) == ("JPEG", (32, 32), "RGB")
        assert "cat.jpg is a cat" in run.stdout
