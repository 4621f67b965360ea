"""Following a job prints each epoch's line once, at the epoch's own report (the one without
``step``), whatever a mid-epoch report's ``step`` says. A worker used to report the last batch a
call into the compiled graph could run (step 16 of 4, and 4 of 4 before validation), and `fdl job
--follow` / `fdl train` read ``step >= steps`` as the epoch's end: the epoch's line came twice,
the first with ``val_loss -``, and "evaluating and publishing" twice. Against a real gateway, the
reports written to the job's store as such a worker wrote them."""

from __future__ import annotations

from fdl.cli_client import ExitCode
from fdl.job_records import JobStatus
from fdl.jobs import JobStore
from harness.gateway import Gateway
from tests.cli.test_follow_job import follow, submit


def report(epoch: int, **fields: float | None) -> dict[str, float | int | None]:
    return {"epoch": epoch, "epochs": 2, "loss": 0.5, "accuracy": 0.8, **fields}


def finished_and_followed(gateway: Gateway, store: JobStore, job_id: str) -> str:
    """What `fdl job --follow` prints for the job once it has succeeded."""
    result = {"published": False, "reason": "test", "metrics": {"test_accuracy": 0.8}}
    assert store.finish(job_id, JobStatus.SUCCEEDED, result=result)
    cli = follow(gateway, job_id)
    try:
        assert cli.popen.wait(60) == ExitCode.OK, cli.output()
        cli.pump.join(10)
        return cli.output()
    finally:
        cli.stop()


def test_each_epoch_line_is_printed_once(gateway: Gateway, redis_url: str) -> None:
    job_id = submit(gateway)  # two epochs
    store = JobStore.from_url(redis_url)
    assert store.mark_running(job_id, "test-worker")
    mid = {"val_loss": None, "val_accuracy": None, "eta_seconds": -7.3}
    for epoch in (1, 2):
        for step in (2, 4, 16):  # as the repro's stream held them: 16 of 4 steps
            assert store.update_progress(job_id, report(epoch, step=step, steps=4, **mid))
        assert store.update_progress(job_id, report(epoch, val_loss=0.6, val_accuracy=0.75))
    out = finished_and_followed(gateway, store, job_id)
    lines = [line.strip() for line in out.splitlines()]
    assert [line for line in lines if line.startswith("epoch ")] == [
        f"epoch {epoch}/2  loss 0.5000  acc 80.0%  val_loss 0.6000  val_acc 75.0%"
        for epoch in (1, 2)
    ], out
    assert lines.count("evaluating and publishing") == 1, out


def test_a_redone_epochs_line_says_so(gateway: Gateway, redis_url: str) -> None:
    """A resumed run reports again an epoch that a lost run had reported (``redone``): its line
    says that it replaces the earlier one, rather than looking like the epoch ran twice."""
    job_id = submit(gateway)  # two epochs
    store = JobStore.from_url(redis_url)
    assert store.mark_running(job_id, "test-worker")
    done = {"val_loss": 0.6, "val_accuracy": 0.75}
    for epoch, redone in ((1, False), (2, False), (2, True)):
        extra = {"redone": True} if redone else {}
        assert store.update_progress(job_id, {**report(epoch, **done), **extra})
    out = finished_and_followed(gateway, store, job_id)
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("epoch 2/2")]
    assert [line.endswith("(redone: replaces the earlier report)") for line in lines] == [
        False,
        True,
    ], out
