"""`fdl up` in a user's project folder that holds a `training.py` of its own (common for ML
engineers): the stack's worker ran `celery -A training.tasks`, which imported that file (Celery
puts the current folder first on sys.path) and crashed at every restart. Its worker command
(`fdl-worker`) starts with our app, answers a ping and has our task."""

from __future__ import annotations

from pathlib import Path

from fdl.queue import TRAIN_TASK, make_celery
from harness.procs import wait_for
from harness.stack import fdl_up, stack_env

USER_TRAINING = (
    'open(__file__ + ".imported", "w").close()\n'
    'raise SystemExit("user file imported: " + __file__)\n'
)


def test_the_worker_of_fdl_up_ignores_the_folders_training_py(
    tmp_path: Path, data_dir: Path, logs_dir: Path
) -> None:
    (tmp_path / "training.py").write_text(USER_TRAINING)
    env = stack_env(tmp_path, data_dir)
    with fdl_up(
        "fdl-up-user-folder", env, logs_dir, tmp_path / "models", tmp_path / "var", cwd=tmp_path
    ) as stack:
        app = make_celery((stack.var_dir / "redis_url").read_text().strip())

        def registered() -> dict[str, list[str]] | None:
            # The stack's own Redis: its worker is the only one there.
            return app.control.inspect(timeout=1).registered() or None

        tasks = wait_for(registered, 90, "the stack's worker", check=stack.process.ensure_alive)
        assert list(tasks.values()) == [[TRAIN_TASK]], tasks
    assert not (tmp_path / "training.py.imported").exists()
