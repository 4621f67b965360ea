"""A job whose pool process is SIGKILLed (as the out-of-memory killer does) while the worker's
main process lives on: the main process settles it at once, with a reason that names the
signal, rather than leaving it ``running`` until its heartbeat is stale (``FDL_STALE_AFTER_S``,
set far beyond this test here). A real worker; the test kills its pool process by pid."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from harness.procs import wait_for
from harness.worker import MNIST_TINY, Worker, worker_running

# Far less than FDL_STALE_AFTER_S: only the main process can have settled the job by then.
SETTLED_WITHIN_S = 15.0
SETTINGS = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "900",
    "FDL_REAPER_INTERVAL_S": "1",
    "FDL_MAX_ATTEMPTS": "2",
    "FDL_TRAINING_QUEUE": f"fdl-tests-pool-killed-{os.getpid()}",
}


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _kill_pool_process(worker: Worker, record: dict[str, Any]) -> str:
    """SIGKILL the pool process that runs the job of ``record`` (a child of the worker process
    this test started); returns the run's worker name."""
    name = str(record["worker"])
    pid = int(name.rsplit(":", 1)[1])
    assert _ppid(pid) == worker.process.popen.pid, "not a pool process of this test's worker"
    os.kill(pid, signal.SIGKILL)
    return name


def _running_under_a_new_run(worker: Worker, job_id: str, old: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        record = worker.store.get(job_id)
        if record and record["status"] == "running" and record["worker"] != old:
            return record if record.get("progress") else None
        return None

    return wait_for(probe, 120, f"job {job_id} running again", check=worker.process.ensure_alive)


def _status_events(worker: Worker, job_id: str) -> list[dict[str, Any]]:
    events = worker.store.read_events(job_id, count=10_000)
    return [e["data"] for _, e in events if e["type"] == "status"]


def test_a_killed_pool_process_has_its_job_run_again_then_failed_naming_the_signal(
    redis_url: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    with worker_running("pool-killed", redis_url, data_dir, tmp_path, logs_dir, SETTINGS) as worker:
        job_id = worker.submit(
            model="mnist_mlp", publish_as="pool-killed", **{**MNIST_TINY, "epochs": 200}
        )
        worker.wait_progress(job_id)
        first = _kill_pool_process(worker, worker.store.get(job_id) or {})

        def requeued() -> dict[str, Any] | None:
            for event in _status_events(worker, job_id):
                if event["status"] == "queued" and "reason" in event:
                    return event
            return None

        event = wait_for(requeued, SETTLED_WITHIN_S, "the kill recorded", interval=0.05)
        reason = event["reason"]
        assert first in reason and "SIGKILL (signal 9)" in reason, event
        assert "out-of-memory" in reason and "no heartbeat" not in reason, event
        # Its next attempt runs in the pool process that replaced the killed one.
        second = _running_under_a_new_run(worker, job_id, first)
        assert second["attempts"] == 2, second
        _kill_pool_process(worker, second)
        record = worker.wait_done(job_id, timeout=SETTLED_WITHIN_S)
        assert record["status"] == "failed", (record, worker.process.log_tail())
        error = record["error"]
        assert "SIGKILL (signal 9)" in error and "(attempt 2 of 2); giving up" in error, error
        assert record["attempts"] == 2 and record["result"] is None
        statuses = [event["status"] for event in _status_events(worker, job_id)]
        assert statuses == ["queued", "running", "queued", "running", "failed"], statuses
        assert not (worker.model_dir / "pool-killed").exists()


def test_the_reason_names_how_the_pool_process_ended() -> None:
    """From Celery's words for the loss (billiard's ``human_status``): a signal by its name, the
    out-of-memory killer's hint for SIGKILL only, an exit code, or the words themselves."""
    from training.lost_process import exit_reason

    def reason(detail: str) -> str:
        return exit_reason("celery@h:8", f"Worker exited prematurely: {detail}")

    killed = reason("signal 9 (SIGKILL) Job: 0.")
    assert killed.startswith("the training process celery@h:8 was killed by SIGKILL (signal 9)")
    assert "out-of-memory killer" in killed and "smaller batch_size" in killed
    crashed = reason("signal 11 (SIGSEGV) Job: 3.")
    assert crashed == "the training process celery@h:8 was killed by SIGSEGV (signal 11)"
    assert "exited with code 1 " in reason("exitcode 1 Job: 0.")
    assert reason("KeyboardInterrupt.").endswith(
        "was lost (Worker exited prematurely: KeyboardInterrupt.)"
    )
