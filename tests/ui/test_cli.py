"""`fdl` against the real stack, run as people run it: a subprocess with FDL_URL / FDL_API_KEY."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.cli import BackgroundCli
from harness.procs import REPO_ROOT, VENV_BIN, wait_for
from harness.stack import RunningStack, Served, wait_job

pytestmark = pytest.mark.slow
TINY = ["--max-train-examples", "2000", "--max-test-examples", "500", "--validation-split", "500"]


def cli_env(stack: RunningStack, key: str | None, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDL_")}
    env |= {"FDL_URL": stack.url, "FDL_VAR_DIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    env |= {"COLUMNS": "160", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if key is not None:
        env["FDL_API_KEY"] = key
    return env


def fdl(
    stack: RunningStack, *args: str, key: str | None = "", tmp: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `fdl ARGS`; key "" means the stack's admin key, None means no key at all."""
    env = cli_env(stack, stack.api_key if key == "" else key, tmp)
    return subprocess.run(
        ["fdl", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def test_train_follows_the_job_to_the_end(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    args = ["train", "mnist_logreg", "--epochs", "2", *TINY, "--publish-as", "cli_logreg"]
    run = fdl(stack, *args, "--learning-rate", "0.01", tmp=tmp_path, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "epoch 1/2" in run.stdout and "epoch 2/2" in run.stdout
    assert "published cli_logreg version 1" in run.stdout
    job_id = run.stdout.split("Job ", 1)[1].split()[0]
    job = wait_job(stack, job_id)
    assert job["status"] == "succeeded" and job["spec"]["epochs"] == 2
    assert job["spec"]["recipe"] == "book" and job["spec"]["optimizer"]["learning_rate"] == 0.01

    listed = fdl(stack, "jobs", "--json", tmp=tmp_path)
    assert listed.returncode == 0
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    table = fdl(stack, "jobs", tmp=tmp_path)
    assert job_id[:12] in table.stdout and "succeeded" in table.stdout
    shown = fdl(stack, "job", job_id[:10], tmp=tmp_path)  # a unique prefix is enough
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "succeeded" in shown.stdout


def test_models_classify_and_promote(
    served: Served, digits: tuple[list[Path], np.ndarray], tmp_path: Path
) -> None:
    stack = served.stack
    models = fdl(stack, "models", tmp=tmp_path)
    assert models.returncode == 0 and "mnist_logreg" in models.stdout

    paths, labels = digits
    pattern = str(paths[0].parent / "digit*.png")  # a glob the CLI expands itself
    run = fdl(stack, "classify", "mnist_logreg", pattern, "--json", "--top-k", "2", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["version"] == served.version
    assert [Path(p["file"]).name for p in body["predictions"]] == [p.name for p in paths]
    predicted = np.array([p["class_id"] for p in body["predictions"]])
    assert (predicted == labels).mean() >= 0.7, list(zip(predicted, labels, strict=True))
    assert all(len(p["top_k"]) == 2 for p in body["predictions"])
    table = fdl(stack, "classify", "mnist_logreg", str(paths[0]), str(paths[1]), tmp=tmp_path)
    assert table.returncode == 0 and paths[1].name in table.stdout

    promoted = fdl(
        stack, "promote", "mnist_logreg", str(served.version), "--label", "canary", tmp=tmp_path
    )
    assert promoted.returncode == 0, promoted.stderr
    assert f"canary → version {served.version}" in promoted.stdout
    labels_now = httpx.get(f"{stack.url}/v1/models/mnist_logreg", timeout=10).json()["labels"]
    assert labels_now["canary"] == served.version
    missing = fdl(stack, "promote", "mnist_logreg", "99", tmp=tmp_path)
    assert missing.returncode == 1 and "99" in missing.stderr


def test_clear_messages_and_exit_codes(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    wrong = fdl(stack, "jobs", key="not-the-key", tmp=tmp_path)
    assert wrong.returncode == 4 and "not valid" in wrong.stderr
    none = fdl(stack, "jobs", key=None, tmp=tmp_path)
    assert none.returncode == 4 and "FDL_API_KEY" in none.stderr
    unknown = fdl(
        stack, "classify", "no_such_model", str(REPO_ROOT / "api/static/favicon.svg"), tmp=tmp_path
    )
    assert unknown.returncode == 1 and "not served" in unknown.stderr
    # A name the gateway refuses reaches it whole: '?' once cut the path (405 from another route).
    odd = fdl(stack, "classify", "no?such", str(REPO_ROOT / "api/static/favicon.svg"), tmp=tmp_path)
    # The gateway's own message, markup-like text included: '[a-z0-9]' was once eaten by rich.
    assert odd.returncode == 1 and "422 invalid_request" in odd.stderr, odd.stderr
    assert "'^[a-z0-9][a-z0-9_\\-]{0,63}$'" in odd.stderr, odd.stderr
    # A file listed but unreadable (here: an I/O error) is a usage error, not a traceback.
    unreadable = fdl(stack, "classify", "digits", "/proc/self/mem", tmp=tmp_path)
    assert unreadable.returncode == 2 and "cannot read /proc/self/mem" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr
    bad = fdl(stack, "train", "mnist_logreg", "--epochs", "0", tmp=tmp_path)
    assert bad.returncode == 2 and "epochs" in bad.stderr
    slow = fdl(stack, "train", "mnist_logreg", "--recipe", "slow", tmp=tmp_path)
    assert slow.returncode == 2 and "recipe" in slow.stderr
    gone = fdl(stack, "job", "0" * 32, tmp=tmp_path)
    assert gone.returncode == 1 and "job_not_found" in gone.stderr


def test_ctrl_c_detaches_or_cancels(served: Served, tmp_path: Path) -> None:
    stack = served.stack
    long_job = ["train", "mnist_logreg", "--epochs", "300", *TINY, "--publish-as", "cli_long"]

    detached = BackgroundCli(long_job, cli_env(stack, stack.api_key, tmp_path))
    line = detached.wait_line("submitted")
    job_id = line.split("Job ", 1)[1].split()[0]
    detached.popen.send_signal(signal.SIGINT)
    assert detached.popen.wait(30) == 0, detached.output()
    assert "Detached" in detached.output()
    assert httpx.get(f"{stack.url}/v1/jobs/{job_id}", headers=stack.admin(), timeout=10).json()[
        "status"
    ] in ("queued", "running")
    cancelled = fdl(stack, "cancel", job_id, tmp=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_job(stack, job_id, timeout=120)["status"] == "cancelled"

    cancelling = BackgroundCli(
        [*long_job, "--cancel-on-exit"], cli_env(stack, stack.api_key, tmp_path)
    )
    line = cancelling.wait_line("submitted")
    job_id = line.split("Job ", 1)[1].split()[0]
    cancelling.popen.send_signal(signal.SIGINT)
    assert cancelling.popen.wait(30) == 130, cancelling.output()
    assert f"Cancelled job {job_id}" in cancelling.output()
    assert wait_job(stack, job_id, timeout=120)["status"] == "cancelled"


def test_job_details_read_as_written(served: Served, tmp_path: Path) -> None:
    """One epoch is "1 epoch"; the TensorBoard folder is relative to where `fdl up` runs, as
    docs/training.md shows it."""
    stack = served.stack
    shown = fdl(stack, "job", served.job_id, tmp=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "1 epoch," in shown.stdout and "1 epochs" not in shown.stdout
    job = httpx.get(f"{stack.url}/v1/jobs/{served.job_id}", headers=stack.admin(), timeout=10)
    assert job.json()["result"]["tensorboard_dir"] == f"var/tensorboard/{served.job_id}"


def test_classify_never_cuts_file_names(
    served: Served, digits: tuple[list[Path], np.ndarray], tmp_path: Path
) -> None:
    stack = served.stack
    long_name = tmp_path / f"{'a_rather_long_folder_name_' * 3}digit_{int(digits[1][0])}.png"
    long_name.write_bytes(digits[0][0].read_bytes())
    env = {**cli_env(stack, stack.api_key, tmp_path), "COLUMNS": "80"}  # a pipe's default width
    run = subprocess.run(
        ["fdl", "classify", "mnist_logreg", str(long_name)],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert len(str(long_name)) > 80
    assert str(long_name) in run.stdout, run.stdout


def test_models_shows_unloaded_versions_as_retired(
    served: Served, rollback_model: str, tmp_path: Path
) -> None:
    stack = served.stack

    def retired() -> bool:
        versions = httpx.get(f"{stack.url}/v1/models/{rollback_model}", timeout=10).json()
        return any(v["state"] in ("END", "NOT_LOADED") for v in versions["versions"])

    wait_for(retired, 60, f"an older {rollback_model} version to be unloaded")
    run = fdl(stack, "models", tmp=tmp_path)
    assert run.returncode == 0, run.stderr
    states = {line.split("│")[3].strip() for line in run.stdout.splitlines() if "│" in line}
    assert "retired" in states, run.stdout
    assert not states & {"end", "not_loaded"}, run.stdout
