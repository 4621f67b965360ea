"""The worker command runs in the user's folder (`fdl up` runs it there, for its `.env`), which
may hold modules of the user's own named like ours: a `training/` package or `training.py`, an
`fdl.py`. `celery -A training.tasks worker` imported the folder's `training` (Celery's find_app
puts the current folder first on sys.path): the worker crashed, or ran the user's code.
`fdl-worker` imports none of them (nor a module that Celery's variables name: an app, a loader, a
configuration module), takes its broker from FDL_REDIS_URL only, refuses to detach however asked
(a detached worker is `python -m celery`, which imports the folder's `celery.py`), trains, and
still reads the folder's `.env`."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from harness.procs import VENV_BIN, wait_for
from harness.worker import MNIST_TINY, WORKER_ARGV, worker_running

# Each module leaves a file beside itself when imported (so an import that swallowed the error
# shows too), then stops the process.
HOSTILE = (
    'open(__file__ + ".imported", "w").close()\n'
    'raise SystemExit("the worker imported " + __file__)\n'
)


def user_folder(root: Path) -> Path:
    """A project folder with a `training` package and an `fdl` module of its own, and the
    project's Celery app."""
    (root / "training").mkdir(parents=True)
    (root / "training" / "__init__.py").write_text(HOSTILE)
    (root / "training" / "tasks.py").write_text(HOSTILE)
    (root / "fdl.py").write_text(HOSTILE)
    (root / "celery.py").write_text(HOSTILE)
    (root / "celeryconfig.py").write_text(HOSTILE)
    (root / "project_tasks.py").write_text(HOSTILE)
    return root


def imported(folder: Path) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*.imported"))


# What a project may set for its own `celery` commands (celery/bin/celery.py's options, also read
# as CELERY_<OPTION>; its app's settings and loader): its app, its loader (`default` imports
# celeryconfig.py from the current folder), its configuration module, another broker (which
# would win over FDL_REDIS_URL) and a result backend.
NOWHERE = "redis://127.0.0.1:1/0"
CELERY_VARIABLES = {
    "APP": "project_tasks",
    "CELERY_APP": "project_tasks",
    "LOADER": "default",
    "CELERY_LOADER": "default",
    "CONFIG_MODULE": "celeryconfig",
    "CELERY_CONFIG": "celeryconfig",
    "CELERY_CONFIG_MODULE": "celeryconfig",
    "BROKER_URL": NOWHERE,
    "CELERY_BROKER": NOWHERE,
    "CELERY_BROKER_URL": NOWHERE,
    "CELERY_BROKER_READ_URL": NOWHERE,
    "CELERY_BROKER_WRITE_URL": NOWHERE,
    "RESULT_BACKEND": "celeryconfig:Backend",
    "CELERY_RESULT_BACKEND": "celeryconfig:Backend",
}


def test_a_job_trains_in_a_folder_with_modules_named_like_ours(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    folder = user_folder(tmp_path / "project")
    node = f"user-folder-{uuid.uuid4().hex[:8]}@%h"  # extra arguments reach the worker
    queue = f"fdl-tests-user-folder-{uuid.uuid4().hex[:8]}"  # only this worker consumes it
    with worker_running(
        "worker-user-folder",
        redis_url,
        data_dir,
        tmp_path / "root",
        logs_dir,
        env={"FDL_TRAINING_QUEUE": queue, **CELERY_VARIABLES},
        cwd=folder,
        # The form Celery's usage lines print (`fdl-worker worker [OPTIONS]`) works too.
        args=["worker", "-n", node],
    ) as worker:
        name = node.replace("%h", os.uname().nodename)
        # start_worker's ping is answered by any worker on the session's Redis: this one's, by name.
        registered = wait_for(
            lambda: worker.app.control.inspect(destination=[name], timeout=1).registered(),
            90,
            f"{name} to answer",
            check=worker.process.ensure_alive,
        )
        assert registered == {name: ["fdl.train"]}, registered
        job_id = worker.submit(model="mnist_logreg", publish_as="user-folder", **MNIST_TINY)
        record = worker.wait_done(job_id, timeout=180)
        assert record["status"] == "succeeded", (record, worker.process.log_tail())
        assert record["worker"].startswith(name), record
        log = worker.process.log_path.read_text(errors="replace")
    assert imported(folder) == [], log
    # One line names the variables ignored, before anything else.
    ignoring = f"fdl-worker: ignoring {', '.join(CELERY_VARIABLES)} (our app and FDL_REDIS_URL)\n"
    assert log.startswith(ignoring), log


def run_worker(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The worker command in ``folder`` with no FDL_ variable set but ``env``'s, to its end."""
    full_env = {name: value for name, value in os.environ.items() if not name.startswith("FDL_")}
    env = full_env | {"PATH": f"{VENV_BIN}:{full_env['PATH']}"} | (env or {})
    return subprocess.run(
        [*WORKER_ARGV, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_folders_dot_env_is_read_and_its_modules_are_not(tmp_path: Path) -> None:
    """A setting of the folder's `.env` stops the worker in one line (a Redis never reached:
    the settings stop it before)."""
    folder = user_folder(tmp_path)
    (folder / ".env").write_text("FDL_REDIS_URL=redis://127.0.0.1:1/0\nFDL_MAX_ATTEMPTS=2.5\n")
    result = run_worker(folder)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert result.stderr.startswith("fdl-worker: FDL_MAX_ATTEMPTS: Input should be"), output
    assert result.stderr.count("\n") == 1, output
    assert imported(folder) == [], output


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (["--detach"], {}),
        (["-D"], {}),
        (["worker", "-D"], {}),
        (["-ED"], {}),  # -E (task events) and -D in one word, as click reads it
        ([], {"CELERY_WORKER_DETACH": "1"}),  # the worker's options' variables
    ],
    ids=["--detach", "-D", "worker -D", "-ED", "CELERY_WORKER_DETACH"],
)
def test_detach_is_refused(
    redis_url: str, tmp_path: Path, args: list[str], variables: dict[str, str]
) -> None:
    """--detach starts `python -m celery worker` again, which would import the folder's
    `celery.py` (and run without our app), however it is asked for. Refused before the worker
    starts: nothing is run, nothing connects."""
    folder = user_folder(tmp_path / "project")
    env = {
        "FDL_REDIS_URL": redis_url,
        "FDL_MODEL_DIR": str(tmp_path / "models"),
        "FDL_VAR_DIR": str(tmp_path / "var"),
        **variables,
    }
    log = tmp_path / "detached.log"
    result = run_worker(folder, *args, "--logfile", str(log), "-n", "detached@%h", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert result.stderr == "fdl-worker: --detach is not supported; run it under a supervisor\n"
    assert not log.exists(), output  # a detached worker makes its log file before it forks
    assert imported(folder) == [], output
