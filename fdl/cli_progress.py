"""What following a job shows as its events come (`fdl train`, `fdl job --follow`): a live
progress bar on a terminal, plain lines elsewhere; :mod:`fdl.cli_follow` reads the stream."""

from __future__ import annotations

from typing import Any

from rich.progress import Progress
from rich.text import Text

from fdl import cli_format as fmt
from fdl.job_records import TERMINAL


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if percent else f"{value:.4f}"


def _metrics(p: dict[str, Any]) -> str:
    parts = [f"loss {_fmt(p.get('loss'))}", f"acc {_fmt(p.get('accuracy'), True)}"]
    if p.get("val_accuracy") is not None:
        parts.append(f"val_acc {_fmt(p.get('val_accuracy'), True)}")
    if p.get("images_per_second"):
        parts.append(f"{p['images_per_second']:.0f} img/s")
    if p.get("eta_seconds") is not None:
        parts.append(f"ETA {p['eta_seconds']:.0f}s")
    return "  ".join(parts)


def _epoch_line(p: dict[str, Any]) -> str:
    # A resumed run trains again an epoch that a lost run had reported: its line replaces that one.
    redone = "  (redone: replaces the earlier report)" if p.get("redone") is True else ""
    return (
        f"epoch {p['epoch']}/{p.get('epochs', '?')}  loss {_fmt(p.get('loss'))}  "
        f"acc {_fmt(p.get('accuracy'), True)}  val_loss {_fmt(p.get('val_loss'))}  "
        f"val_acc {_fmt(p.get('val_accuracy'), True)}{redone}"
    )


class Follower:
    """Renders events; ``status`` is the last status seen, ``last_id`` the last event's id (the
    Last-Event-ID of a reconnection: events already shown are not shown again).

    On a terminal a live progress bar shows the current stage and the epoch's metrics. Output
    that is not a terminal (a pipe, a file, CI's log) gets no bar (rich would print its last
    state cut to 80 columns): the stages are plain lines instead, and no line is wrapped or
    cut."""

    def __init__(self, progress: Progress, epochs: int) -> None:
        self.progress = progress
        self.status = "queued"
        self.last_id = ""
        self.plain = progress.disable
        self.stage = ""
        self.task = progress.add_task("", total=epochs, metrics="")
        self.describe("queued, waiting for a worker")

    def say(self, text: str | Text) -> None:
        """A line above the bar (on a terminal) or a plain line, never wrapped or cut when the
        output is not a terminal."""
        self.progress.console.print(text, highlight=False, soft_wrap=self.plain)

    def describe(self, stage: str, *, line: bool = True) -> None:
        """The bar's description; without a bar, a line when the stage changes (``line``)."""
        self.progress.update(self.task, description=stage)
        if self.plain and line and stage != self.stage:
            self.say(Text(stage))
        self.stage = stage

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "status":
            self.status = data.get("status", self.status)
            # Why it is queued again (a run handed back, a lost one), as the worker wrote it.
            reason = data.get("reason")
            self.on_log(reason if isinstance(reason, str) else None)
            label = {"running": "training", "queued": "queued, waiting for a worker"}
            # The end is said by the summary that follows.
            ended = self.status in TERMINAL
            self.describe(label.get(self.status) or fmt.safe(self.status), line=not ended)
        elif kind == "progress" and data.get("epoch"):
            epochs = data.get("epochs") or self.progress.tasks[0].total
            # A mid-epoch report carries step/steps; the epoch's own report (after validation)
            # has none, whatever step says: an older worker reported step 16 of 4 steps.
            step, steps = data.get("step"), data.get("steps")
            mid = step is not None
            done = data["epoch"]
            if mid:
                done += (min(step / steps, 1) if steps else 0) - 1
            self.progress.update(
                self.task,
                total=epochs,
                completed=done,
                description=f"epoch {data['epoch']}/{epochs}",
                metrics=_metrics(data),
            )
            self.stage = f"epoch {data['epoch']}/{epochs}"
            if not mid:
                self.say(Text(_epoch_line(data)))
                if data["epoch"] >= epochs:
                    self.describe("evaluating and publishing")

    def on_log(self, message: str | None) -> None:
        """A worker's note (loading the dataset, waiting for the model repository's lock),
        printed dim, as it is (its control characters made visible)."""
        if message:
            self.say(fmt.plain(message, "dim", lines=True))
