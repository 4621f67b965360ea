"""A real worker paused (SIGSTOP) in its publish, longer than ``FDL_STALE_AFTER_S``, while its
reaper ends the job (``failed``, out of attempts, or ``cancelled``, a cancel requested meanwhile),
publishes nothing once it resumes: the record stays ended, no version appears, and the worker
logs that it lost the job. Its record's last check and the rename of its version happen under
the model repository's lock, and the reaper decides only under that lock. Before, the run
checked its record under the lock, was paused while it sealed its export (a chmod and a flush of
every file), the reaper, which read the repository without the lock, ended the job, and the run,
resumed, renamed its version in: served as the newest, for a job recorded ``failed``.

The pause comes at a point the test can see: ``strace`` stops the training process at its first
chmod, the sealing of its staged export (the test checks the path), and leaves it stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from fdl.repository_reads import list_versions
from harness.procs import wait_for
from harness.redis import redis_running
from harness.worker import MNIST_TINY, Worker, worker_running
from training.publish import STAGING_PREFIX

FAST_REAPER = {
    "FDL_HEARTBEAT_INTERVAL_S": "0.5",
    "FDL_STALE_AFTER_S": "3",
    "FDL_REAPER_INTERVAL_S": "1",
}
MODEL = "fenced"


def pool_process(worker: Worker) -> int:
    """The pid of the worker's pool process, the one that runs (and publishes) jobs."""

    def child() -> int | None:
        children = psutil.Process(worker.process.pid).children(recursive=True)
        return children[0].pid if children else None

    return wait_for(child, 60, "the pool process", check=worker.process.ensure_alive)


def stop_at_first_chmod(pid: int, log: Path) -> subprocess.Popen[bytes]:
    """Attach ``strace`` to ``pid`` (its main thread, which runs the job) so that its first
    chmod stops it (SIGSTOP), once attached."""
    argv = ["strace", "-q", "-p", str(pid), "-o", str(log), "-e", "trace=chmod,fchmodat"]
    argv += ["-e", "inject=chmod,fchmodat:signal=SIGSTOP:when=1"]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)

    def attached() -> bool:
        if tracer.poll() is not None:
            raise RuntimeError(f"strace exited with {tracer.returncode}")
        status = Path(f"/proc/{pid}/status").read_text()
        return any(line.split() == ["TracerPid:", str(tracer.pid)] for line in status.splitlines())

    wait_for(attached, 30, "strace attached")
    return tracer


def stopped(pid: int, log: Path) -> bool:
    return "stopped by SIGSTOP" in log.read_text() and psutil.Process(pid).status() in (
        psutil.STATUS_STOPPED,
        psutil.STATUS_TRACING_STOP,
    )


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to pause the run")
@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_a_run_paused_in_its_publish_publishes_nothing_for_a_job_the_reaper_ended(
    end: str, data_dir: Path, tmp_path: Path, logs_dir: Path
) -> None:
    # no checkpoints: their sealing chmods the files of each epoch's before the export's
    env = {**FAST_REAPER, "FDL_MAX_ATTEMPTS": "1" if end == "failed" else "3"}
    env["FDL_CHECKPOINTS"] = "false"
    name = f"fence-{end}"
    with (
        redis_running(tmp_path / "redis", logs_dir, f"redis-{name}") as url,
        worker_running(name, url, data_dir, tmp_path, logs_dir, env) as worker,
    ):
        pid = pool_process(worker)
        trace = tmp_path / "strace.log"
        tracer = stop_at_first_chmod(pid, trace)
        try:
            job_id = worker.submit(model="mnist_logreg", publish_as=MODEL, **MNIST_TINY)
            wait_for(lambda: stopped(pid, trace), 180, "the run stopped at its first chmod")
            first_chmod = trace.read_text().splitlines()[0]
            assert f"{STAGING_PREFIX}{MODEL}-{job_id}-" in first_chmod  # sealing its export
            if end == "cancelled":
                assert worker.store.request_cancel(job_id)["status"] == "running"  # flagged
            ended = worker.wait_status(job_id, {end}, timeout=60)  # by the reaper
        finally:
            os.kill(pid, signal.SIGCONT)
            tracer.terminate()
            tracer.wait(10)
        lost = f"job {job_id}: another run owns it now; "
        wait_for(lambda: lost in worker.process.log_tail(100_000), 60, "the run's note")
        assert f"{lost}this one published nothing" in worker.process.log_tail(100_000)
        record = worker.store.get(job_id)
        assert record["status"] == end and record["result"] is None, record
        assert record["error"] == ended["error"]
        assert list_versions(worker.model_dir / MODEL) == []
        assert not list(worker.model_dir.glob(f"{STAGING_PREFIX}*"))  # its export removed
        # Not paused, the next job publishes as ever.
        job_id = worker.submit(model="mnist_logreg", publish_as=MODEL, **MNIST_TINY)
        record = worker.wait_done(job_id, timeout=180)
        assert record["status"] == "succeeded", record
        assert record["result"]["version"] == 1
        assert list_versions(worker.model_dir / MODEL) == [1]
