"""The pool process that runs the jobs is replaced by a fresh one after a job that took it past
``FDL_MAX_MEMORY_PER_CHILD_MB`` (Celery's ``worker_max_memory_per_child``): TensorFlow keeps
memory after every job (a few MB a job, each traced training step), and one process that ran
every job grew until the out-of-memory killer ended a run. The replacement is planned: the job
that went past the limit ends as it would have, the next one runs in the new process, and
neither is recorded lost or run again (no ``WorkerLostError``, no settling by
:mod:`training.lost_process`). A real worker with a limit below any pool process's size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.procs import wait_for
from harness.worker import Worker, worker_running
from training.time_limit import process_gone

SETTINGS = {
    "FDL_MAX_MEMORY_PER_CHILD_MB": "1",  # every pool process is past it after its job
    "FDL_TRAINING_QUEUE": f"fdl-tests-pool-replaced-{os.getpid()}",
}
# As small as a job gets; the gate keeps it from exporting (a job that ends unpublished succeeds).
SPEC: dict[str, Any] = {
    "model": "mnist_logreg",
    "epochs": 1,
    "batch_size": 64,
    "max_train_examples": 320,
    "max_test_examples": 64,
    "validation_split": 64,
    "publish": {"min_accuracy": 1.0},
}


def _run(worker: Worker, index: int) -> tuple[dict[str, Any], int]:
    """A tiny job that succeeds, run once; its record and the pid of the process that ran it."""
    job_id = worker.submit(**SPEC)
    record = worker.wait_done(job_id, timeout=180)
    assert record["status"] == "succeeded", (index, record, worker.process.log_tail())
    assert record["attempts"] == 1, record
    events = worker.store.read_events(job_id, count=10_000)
    statuses = [e["data"] for _, e in events if e["type"] == "status"]
    assert [s["status"] for s in statuses] == ["queued", "running", "succeeded"], statuses
    assert not any("reason" in s for s in statuses), statuses
    return record, int(str(record["worker"]).rsplit(":", 1)[1])


def test_a_pool_process_past_its_memory_limit_is_replaced_after_its_job(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with worker_running("pool-replaced", redis_url, data_dir, tmp_path, logs_dir, SETTINGS) as w:
        _first, first_pid = _run(w, 1)
        wait_for(lambda: process_gone(first_pid), 60, f"pool process {first_pid} gone")
        second, second_pid = _run(w, 2)
        assert second_pid != first_pid
        assert second["result"]["published"] is False, second
        log = w.process.log_path.read_text(errors="replace")
        # A planned exit (billiard's EX_RECYCLE), not a lost process: no error, nothing settled.
        assert "WorkerLostError" not in log and "exited with" not in log, log
        assert "was lost" not in log and "killed by" not in log, log


def test_the_limits_given_to_celery(tmp_path: Path) -> None:
    """MiB to Celery's KiB; 0 turns a limit off (None: Celery's own default, never)."""
    from training.settings import DEFAULT_MAX_MEMORY_PER_CHILD_MB, WorkerSettings
    from training.worker_main import child_limits

    def limits(**fields: int) -> dict[str, int | None]:
        return child_limits(WorkerSettings(redis_url="redis://unused", var_dir=tmp_path, **fields))

    assert limits() == {
        "worker_max_memory_per_child": DEFAULT_MAX_MEMORY_PER_CHILD_MB * 1024,
        "worker_max_tasks_per_child": None,
    }
    off = {"worker_max_memory_per_child": None, "worker_max_tasks_per_child": None}
    assert limits(max_memory_per_child_mb=0) == off
    assert limits(max_memory_per_child_mb=0, max_jobs_per_child=50) == {
        **off,
        "worker_max_tasks_per_child": 50,
    }
