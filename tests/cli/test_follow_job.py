"""`fdl job ID --follow`: an existing job's events followed to its end, as `fdl train` follows
the job it submits, exiting with the job's outcome (0 succeeded, 5 failed or cancelled); against
a real gateway, the job's progress written to its store as a worker's would be."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.job_records import JobStatus
from fdl.jobs import JobStore
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, Gateway, bearer
from harness.procs import free_port

EPOCHS = 2


def submit(gateway: Gateway) -> str:
    """A queued job (no worker takes it: the test plays the worker)."""
    job = {"model": "mnist_logreg", "epochs": EPOCHS}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=job, headers=bearer(ADMIN_KEY), timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def follow(gateway: Gateway, job_id: str) -> BackgroundCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": gateway.url, "FDL_API_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    # No model server behind the gateway: the published version is never served
    # (tests/cli/test_serve_wait.py waits for one that is).
    return BackgroundCli(["job", job_id[:10], "--follow", "--serve-timeout", "0"], env)


def epoch(store: JobStore, job_id: str, n: int) -> None:
    progress = {"epoch": n, "epochs": EPOCHS, "loss": 1.0 / n, "accuracy": 0.5 + n / 10}
    assert store.update_progress(job_id, progress)


def test_follows_a_job_to_success(gateway: Gateway, redis_url: str) -> None:
    store = JobStore.from_url(redis_url)
    job_id = submit(gateway)
    assert store.mark_running(job_id, "test-worker")
    epoch(store, job_id, 1)  # before it connects: shown from the job's events
    cli = follow(gateway, job_id)
    try:
        cli.wait_line(f"Following job {job_id}")
        cli.wait_line("epoch 1/2  loss")
        epoch(store, job_id, 2)
        cli.wait_line("epoch 2/2  loss")
        # A worker's note (as a finished job waiting for a busy repository lock writes it) is
        # shown as it is; one of another shape is skipped.
        store.append_event(job_id, "log", {"note": 1})
        note = "waiting for the model repository's lock [models/.repository.lock]: 120 s so far"
        store.append_event(job_id, "log", {"message": note})
        cli.wait_line(note)
        result = {
            "published": True,
            "model": "mnist_logreg",
            "version": 3,
            "metrics": {"test_accuracy": 0.9},
        }
        assert store.finish(job_id, JobStatus.SUCCEEDED, result=result)
        assert cli.popen.wait(60) == ExitCode.OK, cli.output()
        out = cli.output()
        assert "Succeeded: published mnist_logreg version 3 (test accuracy 90.00%)" in out
        assert out.count("epoch 1/2  loss") == 1 and "Traceback" not in out, out
    finally:
        cli.stop()


def test_a_cancelled_job_exits_5_while_followed_or_after(gateway: Gateway, redis_url: str) -> None:
    job_id = submit(gateway)
    cli = follow(gateway, job_id)
    try:
        cli.wait_line(f"Following job {job_id}")
        cancelled = httpx.delete(
            f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cli.popen.wait(60) == ExitCode.JOB_FAILED, cli.output()
        assert "Job cancelled. cancelled before it started" in cli.output()
    finally:
        cli.stop()
    # Once it has ended: its events are shown and the same outcome comes at once.
    again = follow(gateway, job_id)
    try:
        assert again.popen.wait(60) == ExitCode.JOB_FAILED, again.output()
        assert "Job cancelled." in again.output()
    finally:
        again.stop()


def test_ctrl_c_detaches_with_how_to_follow_again_on_one_line(gateway: Gateway) -> None:
    job_id = submit(gateway)
    cli = follow(gateway, job_id)
    try:
        cli.wait_line(f"Following job {job_id}")
        cli.popen.send_signal(signal.SIGINT)
        assert cli.popen.wait(30) == ExitCode.OK, cli.output()
        cli.pump.join(10)
        # A pipe: the line is whole, not wrapped at 80 columns (docs/ui.md).
        line = cli.wait_line("Detached; the job keeps running.")
        assert line.rstrip().endswith(f"Follow it with: fdl job {job_id} --follow"), cli.output()
    finally:
        cli.stop()
        httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)


def test_follow_and_json_together_is_a_usage_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: exit 2 comes before any request
    result = CliRunner().invoke(
        app, ["job", "abc", "--follow", "--json", "--url", url], env={"FDL_API_KEY": "k"}
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "not both" in result.output


@pytest.mark.parametrize("args", [["train", "mnist_logreg", "--detach"]])
def test_detaching_says_how_to_follow_again(gateway: Gateway, args: list[str]) -> None:
    env = {"FDL_API_KEY": ADMIN_KEY}
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--url", gateway.url], env=env)
    assert result.exit_code == ExitCode.OK, result.output
    job_id = result.output.split("Job ", 1)[1].split()[0]
    assert f"fdl job {job_id} --follow" in result.output
    httpx.delete(f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)


def test_job_lines_stay_whole_in_a_pipe(gateway: Gateway, redis_url: str) -> None:
    """Output that is not a terminal is never wrapped at 80 columns (docs/ui.md): the line that
    starts following a job with a long model name, and a cancel's answer for a running job."""
    model = "a_model_name_long_enough_to_push_the_line_past_eighty_columns"
    job = {"model": "mnist_logreg", "epochs": EPOCHS, "publish_as": model}
    response = httpx.post(f"{gateway.url}/v1/jobs", json=job, headers=bearer(ADMIN_KEY), timeout=10)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    cli = follow(gateway, job_id)
    try:
        line = cli.wait_line(f"Following job {job_id}")
        assert line.rstrip().endswith(f"({model})."), cli.output()
    finally:
        cli.stop()
    assert JobStore.from_url(redis_url).mark_running(job_id, "test-worker")
    env = {"FDL_API_KEY": ADMIN_KEY}
    result = CliRunner().invoke(app, ["cancel", job_id, "--url", gateway.url], env=env)
    assert result.exit_code == ExitCode.OK, result.output
    lines = [line for line in result.output.splitlines() if "cancellation requested" in line]
    assert lines and lines[0].rstrip().endswith("FDL_STEPS_PER_EXECUTION)."), result.output


def test_hand_backs_are_shown(gateway: Gateway, redis_url: str) -> None:
    """A job that a stopping worker handed back: following it prints the reason of its
    ``queued`` event, and the API's job (``handed_back``), `fdl job` ("Handed back") and
    `fdl jobs` (a "Handed back" column) count the hand-backs."""
    store = JobStore.from_url(redis_url)
    job_id = submit(gateway)
    assert store.mark_running(job_id, "test-worker:7")
    cli = follow(gateway, job_id)
    try:
        cli.wait_line(f"Following job {job_id}")
        reasons = ("handed back by worker test-worker:7, which is stopping, in epoch 1", "", "")
        assert store.hand_back(job_id, "test-worker:7", reasons, 10, 3) is JobStatus.QUEUED
        cli.wait_line(reasons[0])
        assert store.mark_running(job_id, "test-worker:8")
        assert store.finish(
            job_id, JobStatus.FAILED, error="ended by the test", run="test-worker:8"
        )
        assert cli.popen.wait(60) == ExitCode.JOB_FAILED, cli.output()
    finally:
        cli.stop()
    shown = httpx.get(f"{gateway.url}/v1/jobs/{job_id}", headers=bearer(ADMIN_KEY), timeout=10)
    assert (shown.json()["attempts"], shown.json()["handed_back"]) == (1, 1), shown.text
    env = {"FDL_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    one = CliRunner().invoke(app, ["job", job_id, "--url", gateway.url], env=env)
    assert one.exit_code == ExitCode.OK, one.output
    assert "Handed back  1 (by stopping workers)" in one.output, one.output
    listed = CliRunner().invoke(app, ["jobs", "--url", gateway.url], env=env)
    assert listed.exit_code == ExitCode.OK, listed.output
    assert "Handed back" in listed.output, listed.output
    row = next(line for line in listed.output.splitlines() if job_id[:12] in line)
    assert row.rstrip(" │").endswith("1"), listed.output
