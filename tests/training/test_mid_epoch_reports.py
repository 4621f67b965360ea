"""Mid-epoch progress reports stay inside their epoch. Keras names the last batch a call into the
compiled graph could run (16 batches, ``FDL_STEPS_PER_EXECUTION``), not the last it ran: an epoch
of 4 steps used to report ``step`` 16 of 4 with a negative ETA, and the CLI, reading ``step >=
steps`` as the epoch's end, printed the epoch's line (and "evaluating and publishing") twice.

A real job through ``run_job`` in this process (real Redis, TensorFlow on MNIST, the worker's
default steps per execution), reporting at every call instead of every 5 s; its event stream is
then followed as `fdl train` follows it (:class:`fdl.cli_progress.Follower`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress

from fdl.cli_progress import Follower
from fdl.jobs import JobStore
from tests.training.spec_runs import run_spec, settings_for
from tests.training.stores import store_on_db
from training import callbacks
from training.settings import DEFAULT_STEPS_PER_EXECUTION

DB = 5
EPOCHS = 2
# 600 images less 32 for validation, in batches of 32: 18 steps, two calls of 16 batches, the
# second of which Keras reports as ending at step 32.
STEPS = 18


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    yield from store_on_db(redis_url, DB)


def test_mid_epoch_reports_stay_inside_their_epoch(
    store: JobStore, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_STEPS_PER_EXECUTION > 1 and STEPS % DEFAULT_STEPS_PER_EXECUTION
    monkeypatch.setattr(callbacks, "MID_EPOCH_REPORT_S", 0.0)  # a report at every call
    _, record = run_spec(
        store, "mid-epoch", settings_for(data_dir, tmp_path), model="mnist_logreg",
        epochs=EPOCHS, batch_size=32, max_train_examples=600, max_test_examples=64,
        validation_split=32,
    )  # fmt: skip
    assert record["status"] == "succeeded", record["error"]
    events = store.read_events("mid-epoch", count=10_000)
    reports = [event["data"] for _, event in events if event["type"] == "progress"]
    mid = [report for report in reports if "step" in report]
    ends = [report for report in reports if "step" not in report]
    assert [report["epoch"] for report in ends] == list(range(1, EPOCHS + 1)), reports
    # One report per epoch within it: after its first call; its second call ran its last batch.
    assert [(r["epoch"], r["step"], r["steps"]) for r in mid] == [
        (epoch, DEFAULT_STEPS_PER_EXECUTION, STEPS) for epoch in range(1, EPOCHS + 1)
    ], reports
    for report in mid:
        assert report["val_loss"] is None and report["val_accuracy"] is None
        assert report["eta_seconds"] >= 0 and report["images_per_second"] > 0, report
    assert all(report["eta_seconds"] >= 0 for report in ends), reports
    # Followed as `fdl train` follows it (no terminal): each epoch's line once.
    out = follow([(event["type"], event["data"]) for _, event in events])
    for epoch in range(1, EPOCHS + 1):
        assert out.count(f"epoch {epoch}/{EPOCHS}  loss") == 1, out
    assert out.count("evaluating and publishing") == 1, out


def follow(events: list[tuple[str, dict[str, Any]]]) -> str:
    """What `fdl train` prints for ``events`` to output that is not a terminal."""
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=80)
    with Progress(console=console, disable=True) as progress:
        follower = Follower(progress, EPOCHS)
        for kind, data in events:
            follower.on_event(kind, data)
    return output.getvalue()
