"""Follow a job's server-sent events with a rich progress bar, until the job ends."""

from __future__ import annotations

from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from fdl.cli_client import ExitCode, Gateway, console, fail
from fdl.job_records import TERMINAL

MAX_RECONNECTS = 5


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
    return (
        f"epoch {p['epoch']}/{p.get('epochs', '?')}  loss {_fmt(p.get('loss'))}  "
        f"acc {_fmt(p.get('accuracy'), True)}  val_loss {_fmt(p.get('val_loss'))}  "
        f"val_acc {_fmt(p.get('val_accuracy'), True)}"
    )


class Follower:
    """Renders events; ``status`` is the last status seen."""

    def __init__(self, progress: Progress, epochs: int) -> None:
        self.progress = progress
        self.status = "queued"
        self.task = progress.add_task("queued, waiting for a worker", total=epochs, metrics="")

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "status":
            self.status = data.get("status", self.status)
            label = {"running": "training", "queued": "queued, waiting for a worker"}
            self.progress.update(self.task, description=label.get(self.status, self.status))
        elif kind == "progress" and data.get("epoch"):
            epochs = data.get("epochs") or self.progress.tasks[0].total
            step, steps = data.get("step") or 0, data.get("steps") or 0
            mid = bool(step and steps and step < steps)
            done = data["epoch"] - 1 + step / steps if mid else data["epoch"]
            self.progress.update(
                self.task,
                total=epochs,
                completed=done,
                description=f"epoch {data['epoch']}/{epochs}",
                metrics=_metrics(data),
            )
            if not mid:
                self.progress.console.print(_epoch_line(data), highlight=False)
                if data["epoch"] >= epochs:
                    self.progress.update(self.task, description="evaluating and publishing")


def follow(gateway: Gateway, job_id: str, epochs: int) -> str:
    """Stream the job's events until its terminal status; returns that status.

    Reconnects with Last-Event-ID when the stream drops before the end (a gateway restart).
    KeyboardInterrupt propagates to the caller, which detaches or cancels.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    last_id: str | None = None
    failures = 0
    with Progress(*columns, console=console, transient=False) as progress:
        follower = Follower(progress, epochs)
        while follower.status not in TERMINAL:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            with gateway.errors():
                try:
                    with connect_sse(
                        gateway.client,
                        "GET",
                        f"/v1/jobs/{job_id}/events",
                        headers=headers,
                        timeout=httpx.Timeout(10.0, read=60.0),
                    ) as source:
                        gateway.check(source.response)
                        for event in source.iter_sse():
                            if event.id:
                                last_id = event.id
                                failures = 0
                            if event.event in ("status", "progress"):
                                follower.on_event(event.event, event.json())
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout, SSEError):
                    pass
            if follower.status not in TERMINAL:
                failures += 1
                # The stream ended early: read the record, then reconnect (bounded).
                follower.status = gateway.get(f"/v1/jobs/{job_id}")["status"]
                if failures > MAX_RECONNECTS:
                    fail("the job's event stream keeps breaking off", ExitCode.UNREACHABLE)
    return follower.status
