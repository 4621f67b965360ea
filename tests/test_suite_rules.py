"""The rules tests/conftest.py sets for the whole suite, each checked in a pytest session of its
own over that conftest, on modules written here:

- no test module leaks unfinished jobs into the next one through the session's Redis: the first
  module leaves records queued and running (by a worker that does not exist) on two databases,
  as the gateway tests do; the second finds them ended, and a worker's reaper pass
  (training/reaper.py) adopts none of them. Before, the records stayed running, and a later
  module's worker adopted one, ran it and published a version that its test counted;
- under CI (CI=true) a skipped test fails unless its reason starts with "platform: " (a machine
  that cannot run it, PLATFORM_SKIP); elsewhere skips stay skips. Before, a CI machine without
  strace or Chromium counted the publish fence and browser tests as passed, unrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.procs import REPO_ROOT

LEAVES = """
    from fdl.jobs import JobStore


    def test_leaves_jobs_unfinished(redis_url: str) -> None:
        for db in (0, 7):
            store = JobStore.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}")
            store.create({"model": "mnist_logreg"}, f"queued-{db}")
            store.create({"model": "mnist_logreg"}, f"running-{db}")
            assert store.mark_running(f"running-{db}", "no-such-worker")
"""

FINDS = """
    from pathlib import Path

    from fdl.jobs import JobStore
    from harness.procs import wait_for
    from training.reaper import reap_once
    from training.settings import WorkerSettings


    def test_finds_them_ended_and_adopts_none(redis_url: str, tmp_path: Path) -> None:
        for db in (0, 7):
            store = JobStore.from_url(redis_url.rsplit("/", 1)[0] + f"/{db}")
            ids = (f"queued-{db}", f"running-{db}")
            statuses = {i: (store.get(i) or {}).get("status") for i in ids}
            assert set(statuses.values()) <= {"cancelled", "failed"}, statuses
            settings = WorkerSettings(
                redis_url="redis://unused", model_dir=tmp_path / "models",
                var_dir=tmp_path / "var", heartbeat_interval_s=0.01, stale_after_s=0.05,
                resend_queued_after_s=0.05, training_queue="celery",
            )
            beat = float((store.get(f"running-{db}") or {}).get("heartbeat_at") or 0)
            wait_for(lambda: store.now() - beat > 0.1, 5, "the heartbeat to go stale")
            sent = []
            actions = reap_once(store, settings, lambda *m: sent.append(m), sweep_leftovers=False)
            assert (actions, sent) == ([], []), (actions, sent)
"""

SKIPS = """
    import pytest


    def test_needs_a_tool() -> None:
        pytest.skip("needs strace")


    @pytest.mark.skipif(True, reason="no Chromium")
    def test_marked() -> None:
        pass


    def test_on_another_machine() -> None:
        pytest.skip("platform: needs root")


    @pytest.mark.skipif(True, reason="platform: no IPv6 loopback")
    def test_marked_for_another_machine() -> None:
        pass


    @pytest.mark.xfail(reason="known")
    def test_expected_to_fail() -> None:
        raise AssertionError


    def test_runs() -> None:
        pass
"""


def inner_session(folder: Path, modules: dict[str, str], **env: str) -> str:
    """pytest's output for ``modules`` (file name: source) in ``folder``, run under this suite's
    conftest with ``env`` added to the environment."""
    (folder / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    for name, source in modules.items():
        (folder / name).write_text(textwrap.dedent(source))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(folder), "-c", os.devnull, str(folder)]
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
    run = subprocess.run(argv, cwd=folder, env=environ, capture_output=True, text=True, timeout=120)
    return run.stdout + run.stderr


def test_a_modules_unfinished_jobs_end_with_it(tmp_path: Path) -> None:
    output = inner_session(tmp_path, {"test_a_leaves.py": LEAVES, "test_b_finds.py": FINDS})
    assert "\n2 passed in " in output, output


@pytest.mark.parametrize(
    ("ci", "summary"),
    [
        ("true", "1 failed, 1 passed, 2 skipped, 1 xfailed, 1 error"),
        ("", "1 passed, 4 skipped, 1 xfailed"),
    ],
    ids=["ci", "elsewhere"],
)
def test_a_skip_fails_under_ci_unless_the_machine_cannot_run_it(
    tmp_path: Path, ci: str, summary: str
) -> None:
    output = inner_session(tmp_path, {"test_skips.py": SKIPS}, CI=ci)
    assert f"\n{summary} in " in output, output
    if ci:
        assert "skipped under CI, which must run it: needs strace" in output, output
        assert "ERROR test_skips.py::test_marked" in output, output
