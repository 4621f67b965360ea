"""`fdl jobs`, `fdl job`, `fdl cancel`: training jobs from the terminal (`fdl train`, which
submits one, is in :mod:`fdl.cli_train`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fdl import cli_format as fmt
from fdl import cli_shapes as shapes
from fdl.cli_client import (
    ExitCode,
    Gateway,
    JsonOption,
    KeyOption,
    UrlOption,
    console,
    fail,
    print_json,
)
from fdl.cli_follow import detached, follow_to_end, job_epochs, job_path
from fdl.cli_served import SERVE_TIMEOUT_S, ServeTimeoutOption, wait_until_served

FULL_ID_LENGTH = 32


def _epochs(count: Any) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _handed_back(job: dict[str, Any]) -> int:
    """The runs of ``job`` handed back by stopping workers (0 from a gateway that omits it)."""
    count = job.get("handed_back")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def resolve_id(gateway: Gateway, job_id: str) -> str:
    """Full job ids pass through; a unique prefix (as `fdl jobs` shows) is looked up."""
    if len(job_id) >= FULL_ID_LENGTH:
        return job_id
    page = gateway.get("/v1/jobs", params={"limit": 500}, expect=shapes.JobPage)
    matches: list[str] = [j["id"] for j in page["jobs"] if j["id"].startswith(job_id.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        fail(f"no job id starts with {job_id!r}", ExitCode.API_ERROR)
    fail(f"{len(matches)} jobs start with {job_id!r}; give more characters", ExitCode.USAGE)


def jobs(
    status: Annotated[
        str | None, typer.Option(help="Only jobs with this status (queued, running, …).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List training jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    with Gateway(url, api_key) as gateway:
        page = gateway.get("/v1/jobs", params=params, expect=shapes.JobPage)
    if as_json:
        print_json(page)
        return
    table = Table(title=f"Jobs ({len(page['jobs'])} of {page['total']})", title_justify="left")
    # Hand-backs by stopping workers, only when a job of the page has any.
    handed_back = any(_handed_back(job) for job in page["jobs"])
    columns = ("ID", "Model", "Status", "Epoch", "Test accuracy", "Created", "Handed back")
    for column in columns if handed_back else columns[:-1]:
        table.add_column(column, justify="right" if column == "Test accuracy" else "left")
    for job in page["jobs"]:
        progress = job.get("progress") or {}
        spec = job.get("spec") or {}
        epochs = progress.get("epochs") or spec.get("epochs")
        result = job.get("result") or {}
        table.add_row(
            fmt.plain(job["id"][:12]),
            fmt.plain(result.get("model") or spec.get("publish_as") or spec.get("model", "?")),
            fmt.status(job["status"]),
            f"{progress.get('epoch') or 0}/{epochs}" if epochs else "-",
            fmt.pct((result.get("metrics") or {}).get("test_accuracy")),
            fmt.when(job.get("created_at")),
            *([str(_handed_back(job))] if handed_back else []),
        )
    console.print(table)


def job(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    follow_it: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Follow the job until it ends, as `fdl train` does (exit 5 if it failed or was "
            "cancelled; Ctrl-C stops following, the job goes on).",
        ),
    ] = False,
    serve_timeout: ServeTimeoutOption = SERVE_TIMEOUT_S,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Show one job: spec, progress, result; or follow it live until it ends (--follow) and,
    when it published a version, until the model server serves it."""
    if follow_it and as_json:
        fail("give --follow or --json, not both", ExitCode.USAGE)
    with Gateway(url, api_key) as gateway:
        full_id = resolve_id(gateway, job_id)
        record = gateway.get(job_path(full_id), expect=shapes.Job)
        if follow_it:
            spec = record.get("spec") or {}
            model = fmt.safe(spec.get("publish_as") or spec.get("model") or "?")
            following = Text.assemble("Following job ", (fmt.safe(full_id), "bold"), f" ({model}).")
            console.print(following, soft_wrap=not console.is_terminal)
            try:
                ended = follow_to_end(gateway, full_id, job_epochs(record))
            except KeyboardInterrupt:
                detached(full_id)
                return
            wait_until_served(gateway, ended, serve_timeout)
            return
    if as_json:
        print_json(record)
        return
    spec = record.get("spec") or {}
    progress = record.get("progress") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Job", fmt.plain(record["id"]))
    table.add_row("Status", fmt.status(record["status"]))
    model = f"{spec.get('model')} → {spec.get('publish_as') or spec.get('model')}"
    table.add_row("Model", fmt.plain(model))
    optimizer = spec.get("optimizer") or {}
    table.add_row(
        "Training",
        fmt.plain(
            f"{_epochs(spec.get('epochs'))}, batch {spec.get('batch_size')}, "
            f"{optimizer.get('name')} lr {optimizer.get('learning_rate')}"
        ),
    )
    if progress.get("epoch"):
        table.add_row(
            "Progress",
            f"epoch {progress['epoch']}/{progress.get('epochs')}  loss "
            f"{progress.get('loss')}  accuracy {fmt.pct(progress.get('accuracy'))}  "
            f"val accuracy {fmt.pct(progress.get('val_accuracy'))}",
        )
    result = record.get("result") or {}
    if result:
        published = f"version {result.get('version')}" if result.get("published") else "no"
        reason = result.get("reason") or ""
        shown = f"{published} ({reason})" if reason else published
        table.add_row("Published", fmt.plain(shown, lines=True))
        # Metrics beyond test_accuracy are the gateway's: their names and values too.
        for name, value in (result.get("metrics") or {}).items():
            shown = fmt.pct(value) if "accuracy" in name else value
            table.add_row(fmt.plain(name.replace("_", " ").capitalize()), fmt.plain(shown))
    if record.get("error"):
        table.add_row("Error", fmt.plain(record["error"], "red", lines=True))
    table.add_row("Created", fmt.when(record.get("created_at")))
    table.add_row("Started", fmt.when(record.get("started_at")))
    table.add_row("Finished", fmt.when(record.get("finished_at")))
    table.add_row("Attempts", str(record.get("attempts") or 0))
    if handed_back := _handed_back(record):
        table.add_row("Handed back", f"{handed_back} (by stopping workers)")
    console.print(table)


def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Cancel a job (a running job stops within 16 batches: FDL_STEPS_PER_EXECUTION)."""
    with Gateway(url, api_key) as gateway:
        full_id = resolve_id(gateway, job_id)
        record = gateway.delete(job_path(full_id), expect=shapes.Job)
    status = record.get("status", "?")
    shown = fmt.safe(full_id)
    if status == "cancelled":
        console.print(
            f"Job {shown} cancelled.",
            highlight=False,
            markup=False,
            soft_wrap=not console.is_terminal,
        )
    elif status == "running":
        console.print(
            f"Job {shown}: cancellation requested; it stops within 16 batches "
            "(one call into the compiled graph, FDL_STEPS_PER_EXECUTION).",
            highlight=False,
            markup=False,
            soft_wrap=not console.is_terminal,
        )
    else:
        ended = Text.assemble(f"Job {shown} had already ended: ", fmt.status(status), ".")
        console.print(ended, soft_wrap=not console.is_terminal)
