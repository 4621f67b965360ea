"""`fdl train` and `fdl job --follow` return once the version their job published is served
(``--serve-timeout``): before, `fdl train … --publish-as quick1 && fdl classify quick1 …` got 404
``model_not_found`` for a new model, and the previous version's answer for a new version, until
the model server's next poll of the repository.

Against real processes: the whole stack of `fdl up` training real jobs; a real model server that
never picks a copied-in version up (``--file_system_poll_wait_seconds=0``: one scan at start-up,
then only on a config reload) behind a real gateway, for the timeout and for a wait that ends when
a promotion makes the server load it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from fdl.cli import app
from fdl.cli_client import ExitCode
from fdl.job_records import JobStatus
from fdl.jobs import JobStore
from fdl.repository import sync_config
from harness.cli import BackgroundCli
from harness.gateway import ADMIN_KEY, BLANK_PNG, Gateway, classify, gateway_running, set_label
from harness.model_server import ModelServer, model_server_running
from harness.procs import REPO_ROOT, VENV_BIN, free_port
from harness.prometheus import scrape, total
from harness.stack import RunningStack, fdl_up, stack_env

MODEL_ROUTE = "/v1/models/{model}"
# The longest name a model may have: each message naming it passes 80 columns.
LONG = "a-model-whose-name-is-long-enough-to-pass-eighty-columns-0123456"
QUICK = ["--epochs", "1", "--max-train-examples", "500", "--max-test-examples", "200"]


def cli_env(url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    return env | {"FDL_URL": url, "FDL_API_KEY": key, "PYTHONUNBUFFERED": "1"}


def fdl(url: str, key: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "fdl"), *args],
        env=cli_env(url, key),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def versions(url: str, headers: dict[str, str], model: str) -> dict[int, dict[str, Any]]:
    response = httpx.get(f"{url}/v1/models/{model}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {v["version"]: v for v in response.json()["versions"]}


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
@pytest.mark.parametrize("command", [["train", "mnist_logreg"], ["job", "abc", "--follow"]])
def test_a_serve_timeout_that_is_no_number_of_seconds_is_a_usage_error(
    command: list[str], value: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: exit 2 comes before any request
    args = [*command, "--serve-timeout", value, "--url", url]
    result = CliRunner().invoke(app, args, env={"FDL_API_KEY": "k"})
    assert result.exit_code == ExitCode.USAGE, result.output


# --- 1. the whole stack: train, then classify by name at once ------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, logs_dir: Path
) -> Iterator[RunningStack]:
    tmp = tmp_path_factory.mktemp("serve-wait")
    env = stack_env(tmp, data_dir)
    with fdl_up("fdl-up-serve-wait", env, logs_dir, tmp / "models", tmp / "var") as up:
        yield up


def test_train_returns_once_the_published_version_is_served(stack: RunningStack) -> None:
    for version in (1, 2):
        run = fdl(
            stack.url, stack.api_key, "train", "mnist_logreg", *QUICK, "--publish-as", "quick1"
        )
        out = run.stdout + run.stderr
        assert run.returncode == ExitCode.OK, out
        assert f"published quick1 version {version}" in out, out
        assert "Waiting for the model server to serve quick1" in out, out
        assert f"quick1 version {version} is served." in out, out
        # Right after: the gateway reports it served and the model's name answers from it.
        answer = classify(f"{stack.url}/v1/models/quick1:classify", stack.admin(), BLANK_PNG)
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == version, answer.text
        assert versions(stack.url, stack.admin(), "quick1")[version]["state"] == "AVAILABLE"


def test_a_job_that_published_nothing_does_not_wait(stack: RunningStack) -> None:
    args = ["train", "mnist_logreg", *QUICK, "--publish-as", "gated", "--min-accuracy", "1.0"]
    run = fdl(stack.url, stack.api_key, *args)
    out = run.stdout + run.stderr
    assert run.returncode == ExitCode.OK, out
    assert "Succeeded (test accuracy" in out and "Waiting" not in out, out


# --- 2. a model server that does not load the version ------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.models import build_test_model

    root = tmp_path_factory.mktemp("frozen") / "models"
    build_test_model(root / "digits" / "1", (28, 28, 1), 10, seed=0, model_name="digits")
    for version in (1, 2):  # no label: the server serves version 2 only
        build_test_model(root / LONG / str(version), (28, 28, 1), 10, seed=0, model_name=LONG)
    sync_config(root)
    return root


@pytest.fixture(scope="module")
def frozen(repository: Path, logs_dir: Path) -> Iterator[ModelServer]:
    flags = ["--file_system_poll_wait_seconds=0"]  # one scan at start-up, then on reloads only
    with model_server_running(
        "model-server-frozen", repository, logs_dir, {"digits": 1, LONG: 2}, flags
    ) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    frozen: ModelServer,
    repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    secrets = tmp_path_factory.mktemp("secrets-frozen")
    name = "gateway-frozen"
    with gateway_running(name, logs_dir, redis_url, frozen.port, repository, secrets) as up:
        yield up


def published_job(redis_url: str, model: str, version: int) -> str:
    """A job that ended having published ``version`` of ``model`` (the test plays the worker)."""
    store = JobStore.from_url(redis_url)
    job_id = str(store.create({"model": "mnist_logreg", "epochs": 1})["id"])
    assert store.mark_running(job_id, "test-worker")
    result = {"published": True, "model": model, "version": version, "metrics": {}}
    assert store.finish(job_id, JobStatus.SUCCEEDED, result=result)
    return job_id


def test_a_version_the_server_does_not_load_ends_with_exit_6_then_is_waited_for(
    gateway: Gateway, repository: Path, redis_url: str
) -> None:
    # Published as a worker does (copied aside, then renamed); the server never scans for it.
    aside = repository / "digits" / ".incoming-2"
    shutil.copytree(repository / "digits" / "1", aside)
    aside.rename(repository / "digits" / "2")
    job_id = published_job(redis_url, "digits", 2)

    started = time.monotonic()
    run = fdl(gateway.url, ADMIN_KEY, "job", job_id, "--follow", "--serve-timeout", "2", timeout=60)
    took = time.monotonic() - started
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode == ExitCode.NOT_SERVED, out
    assert "published digits version 2" in out, out
    assert "did not report it served within 2 s" in out and "pending" in out, out
    assert 2 <= took < 30, took
    assert "Traceback" not in out
    # --serve-timeout 0 does not wait.
    run = fdl(gateway.url, ADMIN_KEY, "job", job_id, "--follow", "--serve-timeout", "0")
    assert run.returncode == ExitCode.OK and "Waiting" not in run.stdout, run.stdout + run.stderr

    # Waiting while a promotion reloads the config: the server scans the repository, loads
    # version 2, and the wait ends.
    cli = BackgroundCli(["job", job_id, "--follow"], cli_env(gateway.url, ADMIN_KEY))
    try:
        cli.wait_line("Waiting for the model server to serve digits version 2")
        assert set_label(gateway, "digits", "stable", {"version": 1}).status_code == 200
        assert cli.popen.wait(120) == ExitCode.OK, cli.output()
        cli.pump.join(10)
        assert "digits version 2 is served." in cli.output(), cli.output()
    finally:
        cli.stop()
    assert versions(gateway.url, gateway.admin(), "digits")[2]["state"] == "AVAILABLE"


def one_line(out: str, start: str, end: str) -> None:
    """A line of ``out`` holds the message from ``start`` to ``end``: it was not wrapped."""
    assert any(start in line and line.rstrip().endswith(end) for line in out.splitlines()), out


def test_the_wait_prints_whole_lines_into_a_pipe(gateway: Gateway, redis_url: str) -> None:
    """docs/ui.md: output that is not a terminal is plain lines, none wrapped at 80 columns."""
    run = fdl(gateway.url, ADMIN_KEY, "job", published_job(redis_url, LONG, 2), "--follow")
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    waiting = f"Waiting for the model server to serve {LONG} version 2"
    one_line(run.stdout, waiting, "(up to 120 s, --serve-timeout)")
    one_line(run.stdout, f"{LONG} version 2", "is served.")

    run = fdl(gateway.url, ADMIN_KEY, "job", published_job(redis_url, LONG, 1), "--follow")
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    one_line(run.stdout, f"{LONG} version 1", "was superseded by version 2, which is served.")

    # Version 3 is never published to the repository: the wait times out (fail()'s message).
    job_id = published_job(redis_url, LONG, 3)
    run = fdl(gateway.url, ADMIN_KEY, "job", job_id, "--follow", "--serve-timeout", "1")
    assert run.returncode == ExitCode.NOT_SERVED, run.stdout + run.stderr
    one_line(run.stderr, f"Error: {LONG} version 3 is published", "--serve-timeout waits longer")

    cli = BackgroundCli(["job", job_id, "--follow"], cli_env(gateway.url, ADMIN_KEY))
    try:
        cli.wait_line(f"{waiting[:-1]}3")
        cli.popen.send_signal(signal.SIGINT)
        assert cli.popen.wait(30) == ExitCode.OK, cli.output()
        cli.pump.join(10)
        one_line(cli.output(), f"Stopped waiting; {LONG} version 3", "shows when it is served.")
    finally:
        cli.stop()


def test_the_wait_pauses_as_long_as_a_429_asks(
    frozen: ModelServer,
    repository: Path,
    redis_url: str,
    logs_dir: Path,
    tmp_path: Path,
) -> None:
    """A gateway whose key may make 3 requests at once, then one each 5 s: following the ended
    job takes them (its record, its events, its record again), so the first look at the model is
    refused with Retry-After; the next comes after that pause, not a second later."""
    own_db = f"{redis_url.rsplit('/', 1)[0]}/12"
    redis.Redis.from_url(own_db).flushdb()
    job_id = published_job(own_db, "digits", 1)  # served since the model server started
    limits = {"FDL_RATE_LIMIT_PER_MINUTE": "12", "FDL_RATE_LIMIT_BURST": "3"}
    name = "gateway-serve-wait-limited"
    with gateway_running(
        name, logs_dir, own_db, frozen.port, repository, tmp_path / "secrets", **limits
    ) as limited:
        started = time.monotonic()
        run = fdl(limited.url, ADMIN_KEY, "job", job_id, "--follow", timeout=60)
        took = time.monotonic() - started
        out = run.stdout + run.stderr
        assert run.returncode == ExitCode.OK, out
        assert "digits version 1 is served." in out, out
        refused = total(
            scrape(f"{limited.url}/metrics"),
            "fdl_gateway_requests_total",
            route=MODEL_ROUTE,
            status="429",
        )
        assert refused == 1, (refused, out)
        assert took >= 3, took
