"""`fdl models`, `fdl classify`, `fdl promote`: served models from the terminal."""

from __future__ import annotations

import glob
import mimetypes
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fdl import cli_format as fmt
from fdl import cli_shapes as shapes
from fdl.cli_client import (
    NOT_THE_GATEWAY,
    ExitCode,
    Gateway,
    JsonOption,
    KeyOption,
    UrlOption,
    console,
    fail,
    print_json,
)

BATCH = 32  # images per request (the gateway's default limit is 64)
# Versions the model server unloaded (labelled versions and the newest stay served): no error.
RETIRED = ("END", "NOT_LOADED")
# ... except the newest one, just published, that the gateway marks pending: the model server
# loads it at its next poll of the repository.
PENDING = "pending"
PENDING_NOTE = "pending: published, loaded at the model server's next poll of the repository"


def models(
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List the models with their versions, status, labels and test accuracy."""
    with Gateway(url, api_key) as gateway:
        body = gateway.get("/v1/models", expect=shapes.Models)
    if as_json:
        print_json(body)
        return
    if not body["models"]:
        console.print("No models yet: train one with `fdl train mnist_cnn`.")
        return
    table = Table(title="Models", title_justify="left", caption_justify="left")
    for column in ("Model", "Version", "State", "Labels", "Test accuracy", "Job"):
        table.add_column(column, justify="right" if column == "Test accuracy" else "left")
    for model in body["models"]:
        versions = sorted(model["versions"], key=lambda v: v["version"], reverse=True)
        if not versions:
            table.add_row(fmt.plain(model["name"]), "-", "no versions", "", "", "")
        for index, version in enumerate(versions):
            state = str(version.get("state") or "?")
            style = "green" if state == "AVAILABLE" else "yellow"
            if state == "NOT_LOADED" and version.get("pending") is True:
                state, style = PENDING, "yellow"
                table.caption = PENDING_NOTE
            elif state in RETIRED:
                state, style = "retired", "dim"
            metrics = version.get("metrics") or {}
            table.add_row(
                fmt.plain(model["name"] if index == 0 else ""),
                str(version["version"]),
                fmt.plain(state.lower(), style),
                fmt.plain(", ".join(version.get("labels") or [])),
                fmt.pct(metrics.get("test_accuracy")),
                fmt.plain((version.get("job_id") or "")[:12]),
            )
    console.print(table)


def expand(patterns: list[str]) -> list[Path]:
    """Files named directly or by glob patterns (for shells that pass them unexpanded)."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else []
        if glob.has_magic(pattern) and not matches:
            fail(f"no file matches {pattern!r}", ExitCode.USAGE)
        for name in matches or [pattern]:
            path = Path(name)
            if not path.is_file():
                fail(f"{name} is not a file", ExitCode.USAGE)
            files.append(path)
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:  # unreadable (permissions), or gone since it was listed
        fail(f"cannot read {path}: {error.strerror or error}", ExitCode.USAGE)


def classify(
    model: Annotated[str, typer.Argument(help="Served model name.")],
    files: Annotated[list[str], typer.Argument(help="Image files or glob patterns ('*.png').")],
    version: Annotated[int | None, typer.Option(help="A specific version.")] = None,
    label: Annotated[str | None, typer.Option(help="A labelled version (stable, canary).")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="Classes shown per image.")] = 3,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Classify image files and print a table of predictions."""
    if version is not None and label is not None:
        fail("give --version or --label, not both", ExitCode.USAGE)
    paths = expand(files)
    # Names are sent percent-encoded, so that one holding '?', '#' or '/' reaches the gateway
    # whole and gets its answer (no such model), not some other route's.
    path = f"/v1/models/{quote(model, safe='')}:classify"
    if version is not None:
        path = f"/v1/models/{quote(model, safe='')}/versions/{version}:classify"
    elif label is not None:
        path = f"/v1/models/{quote(model, safe='')}/labels/{quote(label, safe='')}:classify"
    rows: list[tuple[Path, dict[str, Any]]] = []
    served_version = None
    with Gateway(url, api_key, timeout=60.0) as gateway:
        for start in range(0, len(paths), BATCH):
            chunk = paths[start : start + BATCH]
            parts = [
                ("file", (p.name, _read(p), mimetypes.guess_type(p.name)[0] or "image/*"))
                for p in chunk
            ]
            body = gateway.post(
                path, files=parts, data={"top_k": str(top_k)}, expect=shapes.Classification
            )
            if len(body["predictions"]) != len(chunk):
                fail(
                    f"{gateway.url} answered POST {path} with {len(body['predictions'])} "
                    f"predictions for {len(chunk)} images: {NOT_THE_GATEWAY}",
                    ExitCode.API_ERROR,
                )
            served_version = body["version"]
            rows += list(zip(chunk, body["predictions"], strict=True))
    if as_json:
        print_json(
            {
                "model": model,
                "version": served_version,
                "predictions": [{"file": str(p), **pred} for p, pred in rows],
            }
        )
        return
    title = fmt.plain(f"{model} version {served_version}", "table.title")
    table = Table(title=title, title_justify="left")
    table.add_column("File")
    table.add_column("Prediction", style="bold")
    table.add_column("Score", justify="right")
    table.add_column(f"Top {top_k}")
    for file, prediction in rows:
        others = ", ".join(f"{t['label']} {t['score'] * 100:.1f}%" for t in prediction["top_k"])
        table.add_row(
            fmt.plain(file),
            fmt.plain(prediction["label"]),
            fmt.pct(prediction["score"]),
            fmt.plain(others),
        )
    # File names are never cut: the table grows past the console's width (80 columns when the
    # output is a pipe) when the names need it.
    width = console.width
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    console.width = max(width, natural)
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


def promote(
    model: Annotated[str, typer.Argument(help="Served model name.")],
    version: Annotated[int, typer.Argument(min=1, help="The version the label should point at.")],
    label: Annotated[str, typer.Option(help="The label to set.")] = "stable",
    if_version: Annotated[
        int | None,
        typer.Option(
            "--if-version",
            min=1,
            help="Only if the label points at this version now (sent as If-Match): a label "
            "moved meanwhile, by another admin or an earlier try, is left alone (exit 1).",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Point a label (stable, canary) at a version: promote, or roll back to an older one."""
    headers = {} if if_version is None else {"If-Match": f'"{if_version}"'}
    with Gateway(url, api_key) as gateway:
        body = gateway.post(
            f"/v1/models/{quote(model, safe='')}/labels/{quote(label, safe='')}",
            json={"version": version},
            headers=headers,
            expect=shapes.Label,
        )
    previous = body.get("previous")
    was = f" (was version {previous})" if previous else ""
    console.print(
        Text.assemble(
            f"{fmt.safe(model)}: label ",
            (fmt.safe(label), "bold"),
            f" → version {body.get('version', version)}{was}.",
        )
    )
